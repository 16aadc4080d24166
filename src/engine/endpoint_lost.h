// EndpointLost: a copy failed because one of its NBD servers could not be reached any
// more (connections refused, lost or silent after the engine's own reconnection
// attempts), as opposed to a server that answered with an error (EIO on a read, a
// refused write) or a copy that was cancelled.
//
// Callers act on the difference: a VMA resumes a disk whose target went away for a while
// (an SSH tunnel cut, an OMA restarting its export server) from its checkpoint, but does
// not retry a disk whose source or target returned errors. Plain value type.
#pragma once

#include <cstdint>
#include <string>

#include "common/error.h"

namespace mk::engine {

enum class Side : uint8_t { Source, Target };

class EndpointLost : public Error {
 public:
  EndpointLost(Side side, const std::string& message) : Error(message), side_(side) {}
  Side side() const { return side_; }

 private:
  Side side_;
};

}  // namespace mk::engine
