#include "source/source_driver.h"

#include <fmt/format.h>

namespace mk::source {

// A driver that cannot restart a reader or check its point in time (qcow2 images, whose
// bitmaps do not change under a pass) resumes on the reader it has.
std::string Pass::resume_disk(const DiskKey& key, bool restart) {
  for (const auto& d : disks()) {
    if (d.key != key) continue;
    if (restart) throw Error(fmt::format("disk {}: this source cannot restart its reader; start the pass again", d.label));
    return d.uri;
  }
  throw Error(fmt::format("the pass has no disk {}", key.str()));
}

}  // namespace mk::source
