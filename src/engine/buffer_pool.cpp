#include "engine/buffer_pool.h"

#include <sys/mman.h>

#include <new>

namespace mk::engine {

BufferPool::BufferPool(size_t count, size_t size) : size_(size) {
  if (count == 0 || size == 0) return;
  // One anonymous mapping: untouched pages cost no memory. Buffers start on page
  // boundaries whatever their size.
  size_t stride = (size + 4095) / 4096 * 4096;
  block_ = mmap(nullptr, count * stride, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (block_ == MAP_FAILED) {
    block_ = nullptr;
    throw std::bad_alloc();
  }
  free_.reserve(count);
  for (size_t i = count; i-- > 0;) free_.push_back(static_cast<char*>(block_) + i * stride);
  total_ = count * stride;
}

BufferPool::~BufferPool() {
  if (block_) munmap(block_, total_);
}

void* BufferPool::take() {
  if (free_.empty()) return nullptr;
  void* b = free_.back();
  free_.pop_back();
  return b;
}

void BufferPool::give_back(void* buf) { free_.push_back(buf); }

}  // namespace mk::engine
