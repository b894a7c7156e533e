// CKPTDB_EXPORT marks the public API: libckptdb.so is built with hidden
// symbol visibility, and exports only what carries this mark.

#ifndef CKPTDB_EXPORT_H_
#define CKPTDB_EXPORT_H_

#if defined(__GNUC__) || defined(__clang__)
#define CKPTDB_EXPORT [[gnu::visibility("default")]]
#else
#define CKPTDB_EXPORT
#endif

#endif  // CKPTDB_EXPORT_H_
