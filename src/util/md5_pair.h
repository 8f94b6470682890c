// Two MD5 streams over one byte stream: the whole file's, and one restarted at each block
// boundary. MD5 is a chain of dependent 32-bit steps, so one stream leaves most of a core's
// SIMD width idle; here both streams' states sit in lanes of the same vector registers and every
// 64-byte chunk advances both in one pass over the 64 steps. Block boundaries must fall on
// multiples of 64 bytes of the file (block sizes are), except at the end of the file.
#pragma once

#include "util/crypto.h"

#include <cstddef>
#include <cstdint>
#include <optional>

namespace nbu {

class Md5Pair {
 public:
  // kBest: the AVX-512VL build where the CPU has it, else the portable one (SSE2 on x86-64).
  enum class Kernel { kBest, kPortable };
  explicit Md5Pair(Kernel kernel = Kernel::kBest);
  // True when kBest is the AVX-512VL build.
  static bool Accelerated();
  // Feeds the bytes to both streams.
  void Update(const void* data, size_t len);
  // The MD5 of the bytes since the last block boundary; the block stream restarts. Between two
  // boundaries the file must have advanced by a multiple of 64 bytes, unless no more bytes come.
  Md5Digest FinishBlock();
  // The MD5 of every byte fed. Call once, last.
  Md5Digest FinishFile();

 private:
  using CompressFn = void (*)(uint32_t (&)[4][4], const unsigned char*, size_t);
  CompressFn compress_;
  // state_[word][lane]: words a, b, c, d; lane 0 is the file, lane 1 the block.
  uint32_t state_[4][4];
  unsigned char pending_[64] = {};
  size_t pending_len_ = 0;
  uint64_t file_len_ = 0;
  uint64_t block_len_ = 0;
  bool tail_seen_ = false;  // a block ended inside a chunk: no more bytes may come

  void Compress(const unsigned char* chunks, size_t n);
  // Pads `lane` and returns its digest; the other lane's state is left as it was.
  Md5Digest Finish(int lane, uint64_t len);
};

// The whole file's MD5 and each block's, from one read of the bytes: an Md5Pair when the block
// size is a multiple of 64 (it always is unless APP_AZURE_BLOCK_SIZE says otherwise), two
// OpenSSL streams if not. Without blocks, the file's alone: in an accelerated Md5Pair where the
// CPU has AVX-512VL, else OpenSSL. One per file.
class FileHasher {
 public:
  FileHasher() = default;                    // no streams yet: assign a FileHasher(block_size)
  explicit FileHasher(uint64_t block_size);  // 0: the file is not cut into blocks
  void Update(const void* data, size_t len);
  Md5Digest FinishBlock();  // the current block's MD5; the next block starts after it
  Md5Digest FinishFile();   // once, last

 private:
  bool blocks_ = false;
  std::optional<Md5Pair> pair_;
  std::optional<Md5> whole_;  // without pair_
  std::optional<Md5> block_;  // without pair_, when there are blocks
};

}  // namespace nbu
