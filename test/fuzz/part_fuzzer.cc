// libFuzzer target: the messages of a multi-process save (lib/multiprocess.h)
// on arbitrary bytes: DecodeVerdict, DecodePart, and MergeParts of what
// decodes.
//
// Properties (a violation is __builtin_trap()):
//   - a part that decodes re-encodes (EncodePart) to bytes that decode to
//     the same number of nodes and new chunks;
//   - merging a part with itself either fails cleanly or gives a step that
//     EncodeManifest / DecodeManifest accept.
// Anything else (a crash, a sanitizer report, a leak) is found by the fuzzer.

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "multiprocess.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ckptdb;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  Status status;
  (void)DecodeVerdict(bytes, &status);
  Result<ProcessPart> part = DecodePart(bytes, 1, 9, &status);
  if (!part.ok() || !status.ok()) return 0;
  Status again_status;
  Result<ProcessPart> again =
      DecodePart(EncodePart(status, part->manifest, part->new_chunks), 1, 9, &again_status);
  if (!again.ok() || !again_status.ok() ||
      again->manifest.nodes.size() != part->manifest.nodes.size() ||
      again->new_chunks.size() != part->new_chunks.size()) {
    __builtin_trap();
  }
  std::vector<IndexEntry> new_chunks;
  Result<Manifest> merged = MergeParts({*part, *again}, 0, &new_chunks);
  if (!merged.ok()) return 0;
  if (!DecodeManifest(EncodeManifest(*merged)).ok()) __builtin_trap();
  return 0;
}
