// libFuzzer target: the salvage readers (lib/salvage.h) on arbitrary bytes,
// as repair meets them in a damaged store's table files and logs.
//
// Input: byte 0 chooses the reader (even: table file, odd: log); the rest is
// the file.
//
// Properties (a violation is __builtin_trap()): no crash, no read outside
// the input (ASan), and every record delivered lies within the file: its
// extent is a non-empty range of the file's bytes.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "salvage.h"

namespace ckptdb {
namespace {

void CheckExtent(const SalvagedRecord& record, uint64_t size) {
  if (record.extent_begin >= record.extent_end || record.extent_end > size) __builtin_trap();
}

}  // namespace
}  // namespace ckptdb

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ckptdb;
  if (size == 0) return 0;
  const bool log = (data[0] & 1) != 0;
  const std::string file(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::unique_ptr<SalvageSource> source = SalvageSource::FromBytes(file, "input");
  if (log) {
    Result<LogSalvage> salvaged = SalvageLog(*source, [&](const std::vector<LoggedRecord>& batch) {
      for (const LoggedRecord& logged : batch) CheckExtent(logged.record, file.size());
      return Status::OK();
    });
    if (!salvaged.ok()) __builtin_trap();  // memory sources never fail to read
  } else {
    Result<TableSalvage> salvaged = SalvageTable(*source, [&](const SalvagedRecord& record) {
      CheckExtent(record, file.size());
      return Status::OK();
    });
    if (!salvaged.ok()) __builtin_trap();
  }
  return 0;
}
