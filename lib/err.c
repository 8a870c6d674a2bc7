#include "kmq/err.h"

const char *kmq_err2str(kmq_err_t err) {
  switch (err) {
#define KMQ__ERR_STR(name, value, desc)                                        \
  case KMQ_ERR_##name:                                                         \
    return desc;
    KMQ_ERR_LIST(KMQ__ERR_STR)
#undef KMQ__ERR_STR
  }
  return "Unknown kmq error";
}

const char *kmq_err_name(kmq_err_t err) {
  switch (err) {
#define KMQ__ERR_NAME(name, value, desc)                                       \
  case KMQ_ERR_##name:                                                         \
    return #name;
    KMQ_ERR_LIST(KMQ__ERR_NAME)
#undef KMQ__ERR_NAME
  }
  return "UNKNOWN";
}
