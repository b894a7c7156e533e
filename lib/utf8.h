// UTF-8 checks shared by the safetensors codec (whose JSON header must be
// UTF-8) and ckpt-inspect (which prints names and values from any store).

#ifndef CKPTDB_LIB_UTF8_H_
#define CKPTDB_LIB_UTF8_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace ckptdb {

// The length of the well-formed UTF-8 sequence starting at text[at] (1 to
// 4), or 0 when none starts there: no overlong forms, surrogates or code
// points above U+10FFFF, as RFC 3629 says.
size_t Utf8SequenceLength(std::string_view text, size_t at);

bool IsValidUtf8(std::string_view text);

// `text` with every byte that is not part of a well-formed sequence written
// as the four characters \xHH (lower-case hex); well-formed text, backslashes
// included, passes unchanged. The result is valid UTF-8, safe to print and to
// put in JSON; it is for reading, not a reversible encoding.
std::string EscapeInvalidUtf8(std::string_view text);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_UTF8_H_
