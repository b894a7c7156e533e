// Checks of the options a caller hands to Checkpointer::Open and Save, each
// refusal an InvalidArgument (NotSupported for what this build cannot do)
// naming the option and the value given. Nothing is opened or written before
// these pass.

#ifndef CKPTDB_LIB_VALIDATE_OPTIONS_H_
#define CKPTDB_LIB_VALIDATE_OPTIONS_H_

#include "ckptdb/options.h"
#include "ckptdb/status.h"

namespace ckptdb {

Status ValidateOptions(const CheckpointerOptions& options);
// The multiprocessing options (part of ValidateOptions).
Status ValidateMultiprocessing(const CheckpointerOptions& options);
// Metrics and user metadata of one save (the state itself is checked while
// it is flattened).
Status ValidateSaveOptions(const SaveOptions& options);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_VALIDATE_OPTIONS_H_
