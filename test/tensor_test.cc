// Tensor: typed access with a dtype check, and the 16-bit float conversions.

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "ckptdb/tensor.h"
#include "test_util.h"

namespace ckptdb {
namespace {

TEST(TensorValuesTest, TypedAccessChecksTheDType) {
  std::vector<float> data = {1.5f, -2.0f, 3.25f};
  Tensor tensor = Tensor::View(DType::kFloat32, {3}, data.data()).value();
  Result<std::span<const float>> values = tensor.Values<float>();
  ASSERT_OK(values.status());
  EXPECT_EQ(std::vector<float>(values->begin(), values->end()), data);
  Result<std::span<float>> writable = tensor.MutableValues<float>();
  ASSERT_OK(writable.status());
  (*writable)[1] = 7.0f;
  EXPECT_EQ(data[1], 7.0f);

  const Status wrong = tensor.Values<double>().status();
  EXPECT_EQ(wrong.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(wrong.ToString().find("float64"), std::string::npos) << wrong.ToString();
  EXPECT_NE(wrong.ToString().find("float32"), std::string::npos) << wrong.ToString();
  EXPECT_EQ(tensor.Values<int32_t>().status().code(), Status::Code::kInvalidArgument);

  const Tensor read_only = Tensor::ConstView(DType::kFloat32, {3}, data.data()).value();
  EXPECT_OK(read_only.Values<float>().status());
  Tensor copy = read_only;
  EXPECT_EQ(copy.MutableValues<float>().status().code(), Status::Code::kInvalidArgument);

  Tensor halves = Tensor::Allocate(DType::kBFloat16, {2}).value();
  ASSERT_OK(halves.MutableValues<BFloat16>().status());
  (*halves.MutableValues<BFloat16>())[0] = ToBFloat16(1.0f);
  EXPECT_EQ(ToFloat((*halves.Values<BFloat16>())[0]), 1.0f);
  EXPECT_EQ(halves.Values<Float16>().status().code(), Status::Code::kInvalidArgument);
}

TEST(TensorBufferTest, ViewsBorrowAndOwnedBuffersAreSharedByCopies) {
  std::vector<int32_t> data = {1, 2, 3, 4, 5, 6};
  const Tensor view = Tensor::View(DType::kInt32, {2, 3}, data.data()).value();
  EXPECT_EQ(view.data(), reinterpret_cast<const std::byte*>(data.data()));
  EXPECT_EQ(view.mutable_data(), reinterpret_cast<std::byte*>(data.data()));
  EXPECT_TRUE(view.writable());
  EXPECT_FALSE(view.owns_data());
  EXPECT_EQ(view.byte_size(), 24u);
  const Tensor view_copy = view;  // the same borrowed memory
  EXPECT_EQ(view_copy.data(), view.data());
  EXPECT_FALSE(view_copy.owns_data());

  const Tensor read_only = Tensor::ConstView(DType::kInt32, {6}, data.data()).value();
  EXPECT_EQ(read_only.data(), view.data());
  EXPECT_EQ(read_only.mutable_data(), nullptr);
  EXPECT_FALSE(read_only.writable());
  EXPECT_FALSE(Tensor(read_only).writable());

  Tensor owned = Tensor::CopyOf(view);
  EXPECT_TRUE(owned.owns_data());
  EXPECT_TRUE(owned.writable());
  EXPECT_NE(owned.data(), view.data());
  EXPECT_TRUE(owned.ContentEquals(view));
  {
    const Tensor shared = owned;  // shares the bytes, which outlive `owned`
    owned = Tensor();
    EXPECT_TRUE(shared.owns_data());
    EXPECT_EQ(shared.Values<int32_t>().value()[5], 6);
  }
  EXPECT_FALSE(owned.owns_data());
  EXPECT_EQ(owned.data(), nullptr);
  EXPECT_TRUE(owned.writable());  // empty: nothing to refuse

  EXPECT_TRUE(Tensor::Allocate(DType::kInt8, {0}).value().owns_data());
  EXPECT_FALSE(Tensor::ConstView(DType::kInt8, {0}, nullptr).value().owns_data());
  EXPECT_FALSE(Tensor::View(DType::kInt8, {1}, nullptr).ok());
}

TEST(TensorBufferTest, AllocatedBuffersOfEverySizeAreZeroAndWritable) {
  for (int64_t bytes : {int64_t{1}, int64_t{65535}, int64_t{65536}, int64_t{(1 << 20) + 3},
                        int64_t{2 << 20}, int64_t{(2 << 20) + 5}}) {
    Tensor tensor = Tensor::Allocate(DType::kInt8, {bytes}).value();
    std::byte* data = tensor.mutable_data();
    for (int64_t i = 0; i < bytes; i += 511) ASSERT_EQ(data[i], std::byte{0}) << bytes << " " << i;
    ASSERT_EQ(data[bytes - 1], std::byte{0}) << bytes;
    std::memset(data, 0x5a, static_cast<size_t>(bytes));
    EXPECT_EQ(data[bytes - 1], std::byte{0x5a});
    // From 64 KiB on, a mapping of its own (zero pages, no memset before
    // the decoders write them), not a heap block behind a control block.
    if (bytes >= 65536) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(data) % 4096, 0u) << bytes;
    }
  }
}

// A state of 10^6 leaves holds 10^6 tensors: 56 bytes fill a 64-byte heap
// chunk (72 took 80).
static_assert(sizeof(Tensor) <= 56, "a tensor grew past 56 bytes");

TEST(Float16Test, KnownValuesAndRounding) {
  EXPECT_EQ(ToFloat16(1.0f).bits, 0x3c00);
  EXPECT_EQ(ToFloat16(-2.0f).bits, 0xc000);
  EXPECT_EQ(ToFloat16(65504.0f).bits, 0x7bff);                 // largest
  EXPECT_EQ(ToFloat16(65519.0f).bits, 0x7bff);                 // below the midpoint
  EXPECT_EQ(ToFloat16(65520.0f).bits, 0x7c00);                 // ties to even: infinity
  EXPECT_EQ(ToFloat16(std::ldexp(1.0f, -24)).bits, 0x0001);    // smallest subnormal
  EXPECT_EQ(ToFloat16(std::ldexp(1.0f, -25)).bits, 0x0000);    // tie to even: zero
  EXPECT_EQ(ToFloat16(std::ldexp(3.0f, -25)).bits, 0x0002);    // tie to even: 2
  EXPECT_EQ(ToFloat16(std::ldexp(1.0f, -14)).bits, 0x0400);    // smallest normal
  EXPECT_EQ(ToFloat16(1.0f + std::ldexp(1.0f, -11)).bits, 0x3c00);  // tie to even
  EXPECT_EQ(ToFloat16(1.0f + std::ldexp(3.0f, -11)).bits, 0x3c02);  // tie to even
  EXPECT_EQ(ToFloat16(-0.0f).bits, 0x8000);
  EXPECT_EQ(ToFloat16(std::numeric_limits<float>::infinity()).bits, 0x7c00);
  EXPECT_TRUE(std::isnan(ToFloat(ToFloat16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(Float16Test, EveryValueRoundTripsThroughFloat) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const Float16 value{static_cast<uint16_t>(bits)};
    const float widened = ToFloat(value);
    if (std::isnan(widened)) {
      EXPECT_EQ(bits & 0x7c00u, 0x7c00u) << bits;
      continue;
    }
    EXPECT_EQ(ToFloat16(widened).bits, bits) << std::hex << bits;
  }
}

TEST(BFloat16Test, KnownValuesRoundingAndEveryValueRoundTrips) {
  EXPECT_EQ(ToBFloat16(1.0f).bits, 0x3f80);
  EXPECT_EQ(ToBFloat16(std::bit_cast<float>(0x3f808000u)).bits, 0x3f80);  // tie to even
  EXPECT_EQ(ToBFloat16(std::bit_cast<float>(0x3f818000u)).bits, 0x3f82);  // tie to even
  EXPECT_EQ(ToBFloat16(std::bit_cast<float>(0x3f808001u)).bits, 0x3f81);  // above the tie
  EXPECT_EQ(ToBFloat16(std::numeric_limits<float>::max()).bits, 0x7f80);  // overflow
  EXPECT_TRUE(std::isnan(ToFloat(ToBFloat16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(ToFloat(ToBFloat16(std::bit_cast<float>(0x7f800001u)))));  // signalling
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const float widened = ToFloat(BFloat16{static_cast<uint16_t>(bits)});
    if (std::isnan(widened)) continue;
    EXPECT_EQ(ToBFloat16(widened).bits, bits) << std::hex << bits;
  }
}

// The float8 value nearest `x` among every finite value of the format, ties
// to the even encoding: the definition the conversions must meet.
template <typename Float8>
uint8_t NearestByBruteForce(float x) {
  int best = -1;
  double best_distance = 0;
  for (int bits = 0; bits < 256; ++bits) {
    const float candidate = ToFloat(Float8{static_cast<uint8_t>(bits)});
    if (!std::isfinite(candidate) || std::signbit(candidate) != std::signbit(x)) continue;
    const double distance = std::fabs(double{candidate} - double{x});
    if (best < 0 || distance < best_distance ||
        (distance == best_distance && (bits & 1) == 0 && (best & 1) == 1)) {
      best = bits;
      best_distance = distance;
    }
  }
  return static_cast<uint8_t>(best);
}

TEST(Float8Test, KnownValues) {
  EXPECT_EQ(ToFloat(Float8E4M3FN{0x7e}), 448.0f);                  // largest
  EXPECT_EQ(ToFloat(Float8E4M3FN{0x01}), std::ldexp(1.0f, -9));    // smallest subnormal
  EXPECT_EQ(ToFloat(Float8E4M3FN{0x38}), 1.0f);
  EXPECT_TRUE(std::isnan(ToFloat(Float8E4M3FN{0x7f})));
  EXPECT_TRUE(std::isnan(ToFloat(Float8E4M3FN{0xff})));
  EXPECT_EQ(ToFloat(Float8E4M3FN{0x78}), 256.0f);                  // no infinity: a number
  EXPECT_EQ(ToFloat8E4M3FN(464.0f).bits, 0x7e);                    // tie to even: 448
  EXPECT_EQ(ToFloat8E4M3FN(465.0f).bits, 0x7f);                    // overflow: NaN
  EXPECT_EQ(ToFloat8E4M3FN(-1e9f).bits, 0xff);
  EXPECT_EQ(ToFloat8E4M3FN(std::numeric_limits<float>::infinity()).bits, 0x7f);
  EXPECT_EQ(ToFloat8E4M3FN(-0.0f).bits, 0x80);

  EXPECT_EQ(ToFloat(Float8E5M2{0x7b}), 57344.0f);                  // largest
  EXPECT_EQ(ToFloat(Float8E5M2{0x01}), std::ldexp(1.0f, -16));     // smallest subnormal
  EXPECT_EQ(ToFloat(Float8E5M2{0x3c}), 1.0f);
  EXPECT_TRUE(std::isinf(ToFloat(Float8E5M2{0x7c})));
  EXPECT_TRUE(std::isnan(ToFloat(Float8E5M2{0x7d})));
  EXPECT_EQ(ToFloat8E5M2(61440.0f).bits, 0x7c);                    // tie to even: infinity
  EXPECT_EQ(ToFloat8E5M2(61439.0f).bits, 0x7b);
  EXPECT_EQ(ToFloat8E5M2(-std::numeric_limits<float>::infinity()).bits, 0xfc);
  EXPECT_TRUE(std::isnan(ToFloat(ToFloat8E5M2(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(Float8Test, EveryValueRoundTripsAndRoundingIsNearestEven) {
  for (int bits = 0; bits < 256; ++bits) {
    const float e4m3 = ToFloat(Float8E4M3FN{static_cast<uint8_t>(bits)});
    if (!std::isnan(e4m3)) {
      EXPECT_EQ(ToFloat8E4M3FN(e4m3).bits, bits) << bits;
    }
    const float e5m2 = ToFloat(Float8E5M2{static_cast<uint8_t>(bits)});
    if (!std::isnan(e5m2)) {
      EXPECT_EQ(ToFloat8E5M2(e5m2).bits, bits) << bits;
    }
  }
  // Every float16 value within range (a dense sample including every
  // midpoint between float8 values) rounds to the nearest, ties to even.
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const float x = ToFloat(Float16{static_cast<uint16_t>(bits)});
    if (!std::isfinite(x)) continue;
    if (std::fabs(x) <= 448.0f) {
      EXPECT_EQ(ToFloat8E4M3FN(x).bits, NearestByBruteForce<Float8E4M3FN>(x)) << x;
    }
    if (std::fabs(x) <= 57344.0f) {
      EXPECT_EQ(ToFloat8E5M2(x).bits, NearestByBruteForce<Float8E5M2>(x)) << x;
    }
  }
}

}  // namespace
}  // namespace ckptdb
