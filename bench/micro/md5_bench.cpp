// MD5 throughput of the hashers the service uses, on one thread: OpenSSL's MD5, one Md5Pair (the
// file's MD5 and a block's in one pass), and two pairs sharing a pass as Md5Combiner runs them.
// bytes_per_second counts the bytes of every file hashed (two files' for a shared pass).
#include "util/crypto.h"
#include "util/md5_pair.h"

#include <benchmark/benchmark.h>

#include <random>
#include <string>

namespace nbu {
namespace {

constexpr size_t kBlock = 8 << 20;  // the benchmark's block size; a piece never crosses a block

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

void BM_OpenSslMd5(benchmark::State& state) {
  const std::string data = RandomBytes(static_cast<size_t>(state.range(0)), 1);
  for (auto _ : state) benchmark::DoNotOptimize(Md5::Of(data));
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

// One pair fed `range(0)` bytes at a time; its block restarts every 8 MiB.
void BM_Md5Pair(benchmark::State& state, Md5Pair::Kernel kernel) {
  const std::string data = RandomBytes(static_cast<size_t>(state.range(0)), 2);
  Md5Pair pair(kernel);
  size_t in_block = 0;
  for (auto _ : state) {
    pair.Update(data.data(), data.size());
    if ((in_block += data.size()) >= kBlock) {
      benchmark::DoNotOptimize(pair.FinishBlock());
      in_block = 0;
    }
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

// Two pairs, `range(0)` bytes each per pass.
void BM_Md5PairTwoFiles(benchmark::State& state, Md5Pair::Kernel kernel) {
  const std::string x = RandomBytes(static_cast<size_t>(state.range(0)), 3);
  const std::string y = RandomBytes(static_cast<size_t>(state.range(0)), 4);
  Md5Pair a(kernel), b(kernel);
  size_t in_block = 0;
  for (auto _ : state) {
    Md5Pair::UpdateTogether(a, x.data(), b, y.data(), x.size());
    if ((in_block += x.size()) >= kBlock) {
      benchmark::DoNotOptimize(a.FinishBlock());
      benchmark::DoNotOptimize(b.FinishBlock());
      in_block = 0;
    }
  }
  state.SetBytesProcessed(state.iterations() * 2 * state.range(0));
}

BENCHMARK(BM_OpenSslMd5)->Arg(64 << 10)->Arg(1 << 20);
BENCHMARK_CAPTURE(BM_Md5Pair, best, Md5Pair::Kernel::kBest)->Arg(64 << 10)->Arg(1 << 20);
BENCHMARK_CAPTURE(BM_Md5Pair, portable, Md5Pair::Kernel::kPortable)->Arg(1 << 20);
BENCHMARK_CAPTURE(BM_Md5PairTwoFiles, best, Md5Pair::Kernel::kBest)->Arg(1 << 20);
BENCHMARK_CAPTURE(BM_Md5PairTwoFiles, portable, Md5Pair::Kernel::kPortable)->Arg(1 << 20);

}  // namespace
}  // namespace nbu
