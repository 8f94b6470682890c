// Throughput of the hashers the service uses, on one thread: OpenSSL's MD5, one Md5Pair (the
// file's MD5 and a block's in one pass), two to four pairs sharing a pass as Md5Combiner runs
// them, and the CRC-64 of a file sent in one Put Blob. bytes_per_second counts the bytes of every
// file hashed (each file's for a shared pass).
#include "util/crc64.h"
#include "util/crypto.h"
#include "util/md5_pair.h"

#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

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
  if (!Md5Pair::Available(kernel)) return state.SkipWithError("not on this CPU");
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

// range(1) pairs (2..4), `range(0)` bytes each per pass.
void BM_Md5PairsTogether(benchmark::State& state, Md5Pair::Kernel kernel) {
  if (!Md5Pair::Available(kernel)) return state.SkipWithError("not on this CPU");
  const auto len = static_cast<size_t>(state.range(0));
  const auto count = static_cast<size_t>(state.range(1));
  std::vector<std::string> data;
  std::vector<Md5Pair> pairs;
  for (size_t k = 0; k < count; ++k) {
    data.push_back(RandomBytes(len, 3 + k));
    pairs.emplace_back(kernel);
  }
  std::vector<Md5Pair::Feed> feeds;
  for (size_t k = 0; k < count; ++k) feeds.push_back({&pairs[k], data[k].data()});
  size_t in_block = 0;
  for (auto _ : state) {
    Md5Pair::UpdateTogether(feeds, len);
    if ((in_block += len) >= kBlock) {
      for (auto& p : pairs) benchmark::DoNotOptimize(p.FinishBlock());
      in_block = 0;
    }
  }
  state.SetBytesProcessed(state.iterations() * state.range(1) * state.range(0));
}

BENCHMARK(BM_OpenSslMd5)->Arg(64 << 10)->Arg(1 << 20);

void BM_Crc64(benchmark::State& state, bool portable) {
  if (!portable && !Crc64UsesClmul()) return state.SkipWithError("no PCLMULQDQ on this CPU");
  const std::string data = RandomBytes(static_cast<size_t>(state.range(0)), 4);
  for (auto _ : state) {
    benchmark::DoNotOptimize(portable ? Crc64Portable(0, data.data(), data.size())
                                      : Crc64(0, data.data(), data.size()));
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK_CAPTURE(BM_Crc64, clmul, false)->Arg(64 << 10)->Arg(1 << 20);
BENCHMARK_CAPTURE(BM_Crc64, tables, true)->Arg(64 << 10)->Arg(1 << 20);
BENCHMARK_CAPTURE(BM_Md5Pair, best, Md5Pair::Kernel::kBest)->Arg(64 << 10)->Arg(1 << 20);
BENCHMARK_CAPTURE(BM_Md5Pair, portable, Md5Pair::Kernel::kPortable)->Arg(1 << 20);
BENCHMARK_CAPTURE(BM_Md5Pair, scalar, Md5Pair::Kernel::kScalar)->Arg(1 << 20);
BENCHMARK_CAPTURE(BM_Md5Pair, avx512, Md5Pair::Kernel::kAvx512)->Arg(1 << 20);
// 1 MiB per pair, for each number of pairs a pass may take together.
void EveryPassWidth(benchmark::internal::Benchmark* b) {
  for (int pairs = 2; pairs <= Md5Pair::kMaxTogether; ++pairs) b->Args({1 << 20, pairs});
}
BENCHMARK_CAPTURE(BM_Md5PairsTogether, best, Md5Pair::Kernel::kBest)->Apply(EveryPassWidth);
BENCHMARK_CAPTURE(BM_Md5PairsTogether, portable, Md5Pair::Kernel::kPortable)->Apply(EveryPassWidth);
BENCHMARK_CAPTURE(BM_Md5PairsTogether, scalar, Md5Pair::Kernel::kScalar)->Apply(EveryPassWidth);
BENCHMARK_CAPTURE(BM_Md5PairsTogether, avx512, Md5Pair::Kernel::kAvx512)->Apply(EveryPassWidth);

}  // namespace
}  // namespace nbu
