// libFuzzer target: ParseSafetensors on arbitrary bytes.
//
// Properties of a file that parses (a violation is __builtin_trap()):
//   - every tensor leaf has a non-empty path other than "__metadata__", a
//     byte size equal to its dtype x shape, and a buffer when non-empty;
//   - the tensors hold exactly the data buffer's bytes: their sizes add up to
//     the bytes after the header, and so do their byte values (as a sum, since
//     the order of the tiling is not known here);
//   - ckptdb.tree is not left in the metadata, and FlattenTree accepts the
//     tree (so that it could be saved to a store).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "manifest.h"
#include "safetensors.h"

namespace ckptdb {
namespace {

uint64_t ByteSum(const std::byte* bytes, uint64_t size) {
  uint64_t sum = 0;
  for (uint64_t i = 0; i < size; ++i) sum += static_cast<uint8_t>(bytes[i]);
  return sum;
}

}  // namespace
}  // namespace ckptdb

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ckptdb;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  Result<SafetensorsFile> file = ParseSafetensors(bytes);
  if (!file.ok()) return 0;

  if (size < 8) __builtin_trap();
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= uint64_t{data[i]} << (8 * i);
  if (header_size > size - 8) __builtin_trap();
  const uint64_t data_size = size - 8 - header_size;
  const uint64_t data_sum =
      ByteSum(reinterpret_cast<const std::byte*>(data) + 8 + header_size, data_size);

  bool consistent = true;
  uint64_t covered = 0;
  uint64_t covered_sum = 0;
  file->tree.ForEachLeaf([&](const std::string& path, const Tree& leaf) {
    if (leaf.kind() != Tree::Kind::kTensor) return;
    const Tensor& tensor = leaf.tensor();
    Result<uint64_t> byte_size = TensorByteSize(tensor.dtype(), tensor.shape());
    if (!byte_size.ok() || *byte_size != tensor.byte_size() || path.empty() ||
        path == "__metadata__" || (tensor.byte_size() > 0 && tensor.data() == nullptr)) {
      consistent = false;
      return;
    }
    covered += tensor.byte_size();
    covered_sum += ByteSum(tensor.data(), tensor.byte_size());
  });
  if (!consistent || covered != data_size || covered_sum != data_sum) __builtin_trap();
  if (file->metadata.count(kTreeMetadataKey) != 0) __builtin_trap();
  if (!FlattenTree(file->tree).ok()) __builtin_trap();
  return 0;
}
