// DType and Tensor: the leaves of a training state.
//
// A Tensor is a dtype, a shape and a byte buffer in row-major (C) order. It
// either borrows memory the caller owns (a view, which must outlive every use
// of the tensor) or owns its buffer (allocated by ckptdb). Which one is
// explicit: View()/ConstView() borrow, Allocate()/CopyOf() own.
//
// Copying a Tensor copies the handle, not the bytes: copies of an owned tensor
// share one buffer (freed with the last copy), copies of a view borrow the same
// memory. Use CopyOf() for a deep copy.
//
// Thread safety: distinct Tensors may be used from distinct threads; a shared
// buffer needs external synchronization for writes.

#ifndef CKPTDB_TENSOR_H_
#define CKPTDB_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckptdb/export.h"
#include "ckptdb/status.h"

namespace ckptdb {

// Element types. The numeric values are persisted in manifests: never change
// the value of an existing entry.
enum class DType : uint8_t {
  kBool = 1,
  kInt8 = 2,
  kInt16 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kUInt8 = 6,
  kUInt16 = 7,
  kUInt32 = 8,
  kUInt64 = 9,
  kFloat16 = 10,
  kBFloat16 = 11,
  kFloat32 = 12,
  kFloat64 = 13,
  kFloat8E4M3FN = 14,
  kFloat8E5M2 = 15,
};

// Bytes per element; 0 for a value that is not a known DType.
CKPTDB_EXPORT size_t DTypeSize(DType dtype);
// True for the floating-point dtypes (float8 to float64).
CKPTDB_EXPORT bool DTypeIsFloat(DType dtype);
// "float32", "bfloat16", "float8_e4m3fn", ... ("unknown" for anything else).
CKPTDB_EXPORT std::string_view DTypeName(DType dtype);
// "[2, 3]" ("[]" for a scalar); past 16 dimensions, "[d0, ..., d15, ...
// (N dimensions)]".
CKPTDB_EXPORT std::string ShapeString(const std::vector<int64_t>& shape);
// Inverse of DTypeName: NotFound for an unknown name.
CKPTDB_EXPORT Result<DType> DTypeFromName(std::string_view name);
// True when `raw` is the numeric value of a DType.
CKPTDB_EXPORT bool IsKnownDType(uint8_t raw);

// Elements in `shape` (1 for rank 0). InvalidArgument for a negative dimension
// or when the element count or the byte size of `dtype` overflows 2^62.
CKPTDB_EXPORT Result<uint64_t> ElementCount(const std::vector<int64_t>& shape);
CKPTDB_EXPORT Result<uint64_t> TensorByteSize(DType dtype, const std::vector<int64_t>& shape);

// One element of the 16- and 8-bit float dtypes, as stored (C++ has no such
// types). Float8E4M3FN: 4 exponent bits (bias 7), 3 mantissa bits, no
// infinities, largest 448, NaN 0x7f/0xff. Float8E5M2: 5 exponent bits (bias
// 15), 2 mantissa bits, IEEE infinities and NaNs, largest 57344.
struct BFloat16 {
  uint16_t bits = 0;
};
struct Float16 {
  uint16_t bits = 0;
};
struct Float8E4M3FN {
  uint8_t bits = 0;
};
struct Float8E5M2 {
  uint8_t bits = 0;
};
// Exact widening; NaN stays NaN, infinities stay infinite.
CKPTDB_EXPORT float ToFloat(BFloat16 value);
CKPTDB_EXPORT float ToFloat(Float16 value);
CKPTDB_EXPORT float ToFloat(Float8E4M3FN value);
CKPTDB_EXPORT float ToFloat(Float8E5M2 value);
// Rounded to nearest, ties to even; NaN stays NaN; overflow gives infinity
// (NaN for Float8E4M3FN, which has no infinity).
CKPTDB_EXPORT BFloat16 ToBFloat16(float value);
CKPTDB_EXPORT Float16 ToFloat16(float value);
CKPTDB_EXPORT Float8E4M3FN ToFloat8E4M3FN(float value);
CKPTDB_EXPORT Float8E5M2 ToFloat8E5M2(float value);

// The dtype of a C++ element type, for typed access (Tensor::Values): bool,
// the fixed-width integers, float, double, BFloat16, Float16 and the float8
// types.
template <typename T>
constexpr DType DTypeOf() = delete;
template <> constexpr DType DTypeOf<bool>() { return DType::kBool; }
template <> constexpr DType DTypeOf<int8_t>() { return DType::kInt8; }
template <> constexpr DType DTypeOf<int16_t>() { return DType::kInt16; }
template <> constexpr DType DTypeOf<int32_t>() { return DType::kInt32; }
template <> constexpr DType DTypeOf<int64_t>() { return DType::kInt64; }
template <> constexpr DType DTypeOf<uint8_t>() { return DType::kUInt8; }
template <> constexpr DType DTypeOf<uint16_t>() { return DType::kUInt16; }
template <> constexpr DType DTypeOf<uint32_t>() { return DType::kUInt32; }
template <> constexpr DType DTypeOf<uint64_t>() { return DType::kUInt64; }
template <> constexpr DType DTypeOf<float>() { return DType::kFloat32; }
template <> constexpr DType DTypeOf<double>() { return DType::kFloat64; }
template <> constexpr DType DTypeOf<BFloat16>() { return DType::kBFloat16; }
template <> constexpr DType DTypeOf<Float16>() { return DType::kFloat16; }
template <> constexpr DType DTypeOf<Float8E4M3FN>() { return DType::kFloat8E4M3FN; }
template <> constexpr DType DTypeOf<Float8E5M2>() { return DType::kFloat8E5M2; }

class CKPTDB_EXPORT Tensor {
 public:
  // An empty float32 tensor of shape [0], owning nothing.
  Tensor();

  // Borrows `data` (at least the tensor's byte size, writable): restore may
  // decode straight into it. The caller keeps ownership.
  static Result<Tensor> View(DType dtype, std::vector<int64_t> shape, void* data);
  // Borrows read-only `data`: can be saved, but restore into it is refused.
  static Result<Tensor> ConstView(DType dtype, std::vector<int64_t> shape, const void* data);
  // A new zero-filled buffer owned by the tensor.
  static Result<Tensor> Allocate(DType dtype, std::vector<int64_t> shape);
  // A new owned buffer holding a copy of `source`'s bytes.
  static Tensor CopyOf(const Tensor& source);

  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  uint64_t element_count() const { return byte_size_ / DTypeSize(dtype_); }
  uint64_t byte_size() const { return byte_size_; }
  // True when ckptdb owns the buffer (Allocate, CopyOf).
  bool owns_data() const { return owned_; }
  // False for ConstView tensors.
  bool writable() const { return writable_ || byte_size_ == 0; }

  const std::byte* data() const { return buffer_.get(); }
  // nullptr when the tensor is not writable.
  std::byte* mutable_data() const { return writable_ ? buffer_.get() : nullptr; }

  // Same dtype, shape and bytes.
  bool ContentEquals(const Tensor& other) const;

  // The elements as T, row-major: InvalidArgument naming both dtypes unless
  // T is this tensor's element type (DTypeOf<T>()); MutableValues is also
  // InvalidArgument for a read-only view.
  template <typename T>
  Result<std::span<const T>> Values() const {
    Status checked = CheckElementType(DTypeOf<T>(), false);
    if (!checked.ok()) return checked;
    return std::span<const T>(reinterpret_cast<const T*>(data()), element_count());
  }
  template <typename T>
  Result<std::span<T>> MutableValues() {
    Status checked = CheckElementType(DTypeOf<T>(), true);
    if (!checked.ok()) return checked;
    return std::span<T>(reinterpret_cast<T*>(mutable_data()), element_count());
  }

 private:
  // Restores allocate their tensors through it (lib/tensor_arena.h).
  friend class TensorArena;

  // A tensor with dtype, shape and size set and no buffer.
  static Result<Tensor> Shaped(DType dtype, std::vector<int64_t> shape);
  Status CheckElementType(DType wanted, bool writing) const;

  // A million-leaf state is a million of these: 56 bytes, the most that
  // fits glibc's 64-byte heap chunks.
  //
  // The bytes: owned ones with the control block that frees them with the
  // last copy; borrowed ones (views) as a pointer without one (shared_ptr's
  // aliasing constructor over an empty owner), so copying a view counts
  // nothing.
  std::shared_ptr<std::byte[]> buffer_;
  std::vector<int64_t> shape_;
  uint64_t byte_size_ = 0;
  DType dtype_ = DType::kFloat32;
  bool writable_ = false;  // View, Allocate, CopyOf
  bool owned_ = false;     // Allocate, CopyOf
};

}  // namespace ckptdb

#endif  // CKPTDB_TENSOR_H_
