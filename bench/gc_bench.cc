// Garbage collection cost: time and bytes read against the number of chunks,
// at two chunk sizes. GC reads manifests and the chunk index, never chunk
// payloads, so its time should follow the chunk count, not the bytes.
//
//   build/bench/gc_bench

#include <benchmark/benchmark.h>
#include <rocksdb/perf_context.h>
#include <rocksdb/perf_level.h>

#include "bench_util.h"

namespace ckptdb::bench {
namespace {

// A store holding `chunks` live chunks plus as many dead ones (the previous
// step, pruned with GC off); then one timed collection.
void BM_Gc(benchmark::State& state) {
  const size_t chunks = static_cast<size_t>(state.range(0));
  const uint32_t chunk_bytes = static_cast<uint32_t>(state.range(1)) << 10;
  for (auto _ : state) {
    state.PauseTiming();
    ScratchDir dir;
    const size_t tensors = 100;
    FloatState model(tensors, chunks / tensors * chunk_bytes / sizeof(float), 3);
    CheckpointerOptions options;
    options.max_to_keep = 1;
    options.gc_mode = GcMode::kOff;
    options.chunk_size_bytes = chunk_bytes;
    auto checkpointer = Checkpointer::Open(dir.path(), options);
    if (!checkpointer.ok()) std::abort();
    if (!(*checkpointer)->Save(model.View(), 0).value()) std::abort();
    model.Train(0, tensors, 1);
    if (!(*checkpointer)->Save(model.View(), 1).value()) std::abort();
    rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableCount);
    rocksdb::get_perf_context()->Reset();
    state.ResumeTiming();

    Result<GcStats> stats = (*checkpointer)->CollectGarbage();

    state.PauseTiming();
    const uint64_t bytes_read = rocksdb::get_perf_context()->block_read_byte;
    rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
    if (!stats.ok()) std::abort();
    state.counters["chunks_scanned"] = static_cast<double>(stats->chunks_scanned);
    state.counters["chunks_deleted"] = static_cast<double>(stats->chunks_deleted);
    state.counters["stored_GiB"] =
        static_cast<double>(stats->live_bytes + stats->garbage_bytes) / (1 << 30);
    state.counters["MiB_read"] = static_cast<double>(bytes_read) / (1 << 20);
    state.counters["s_per_100k_chunks"] =
        stats->seconds / static_cast<double>(stats->chunks_scanned) * 1e5;
    state.ResumeTiming();
  }
}
BENCHMARK(BM_Gc)
    ->ArgNames({"live_chunks", "chunk_KiB"})
    ->Args({10000, 4})
    ->Args({10000, 64})
    ->Args({100000, 4})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace ckptdb::bench

BENCHMARK_MAIN();
