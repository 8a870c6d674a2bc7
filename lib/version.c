/* kmq_version(): the version this library was built as (kmq/version.h). */
#include "kmq/version.h"

const char *kmq_version(void) { return KMQ_VERSION_STRING; }

int kmq_version_int(void) { return KMQ_VERSION; }
