#include "guest/conversion.h"

#include <fstream>

#include "guest/accel.h"
#include "guest/domain_xml.h"
#include "guest/run_tool.h"
#include "guest/scratch_dir.h"

namespace mk::guest {

ConversionResult convert_images(const std::vector<DiskImage>& images, const ConversionOptions& options) {
  ScratchDir dir("convert");
  const std::string domain = dir.path() + "/domain.xml";
  std::ofstream(domain) << conversion_domain_xml(options.name, images, options.firmware);
  ToolOptions tool;
  tool.env = libguestfs_env(detect_accel());
  tool.timeout = options.timeout;
  tool.cancel = options.cancel;
  tool.log_path = options.log_path;
  const ToolResult r = run_tool({"virt-v2v-in-place", "-i", "libvirtxml", domain}, tool);
  ConversionResult result;
  result.ok = r.status == 0;
  result.seconds = r.seconds;
  result.log_tail = r.output_tail(4096);
  if (!result.ok) {
    result.error = "converting " + options.name + " with virt-v2v-in-place failed: " + r.output_tail(800) +
                   (options.log_path.empty() ? "" : " (full log: " + options.log_path + ")");
  }
  return result;
}

ConversionResult convert_volumes(const std::vector<DiskImage>& volumes, const ConversionOptions& options) {
  ScratchDir dir("overlays");
  std::vector<Overlay> overlays = make_overlays(volumes, dir.path());
  const std::vector<DiskImage> images = images_of(overlays);
  ConversionResult result = convert_images(images, options);
  if (!result.ok) return result;  // the overlays go with `dir`; the volumes were never opened rw
  const auto start = std::chrono::steady_clock::now();
  std::size_t committed = 0;
  try {
    // Every volume's copy first, so that a failure at any disk can put all of them back:
    // a VM half converted would be neither the final pass nor a converted guest.
    for (Overlay& o : overlays) o.save_undo();
    for (Overlay& o : overlays) {
      o.commit();  // restores its own volume when it fails
      ++committed;
    }
  } catch (const std::exception& e) {
    result.ok = false;
    result.error = e.what();
    std::string kept;
    for (std::size_t i = 0; i < committed; ++i) {
      try {
        overlays[i].restore();
      } catch (const std::exception& again) {
        kept += "; volume " + overlays[i].base().path + " stays converted: " + again.what();
        result.volumes_changed = true;
      }
    }
    if (!kept.empty()) {
      result.error += kept;
    } else if (committed > 0) {
      result.error += "; the volumes committed before it were restored";
    }
  }
  result.commit_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace mk::guest
