// A fixed set of page-aligned I/O buffers, allocated once.
//
// The copy pipeline takes a buffer per request in flight and gives it back when the
// request completes, so memory stays at count × size whatever the disk size. Not
// thread-safe: each worker owns its pool.
#pragma once

#include <cstddef>
#include <vector>

namespace mk::engine {

class BufferPool {
 public:
  BufferPool(size_t count, size_t size);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // A free buffer, or nullptr when all are in use.
  void* take();
  void give_back(void* buf);

  size_t buffer_size() const { return size_; }
  size_t available() const { return free_.size(); }

 private:
  size_t size_;
  void* block_ = nullptr;
  size_t total_ = 0;
  std::vector<void*> free_;
};

}  // namespace mk::engine
