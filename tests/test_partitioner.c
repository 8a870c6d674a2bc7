/* librdkafka's murmur2_random partitioner must place every key on the same
 * partition as the Java client's default partitioner, so that kmq producers and
 * Java producers (or Kafka Streams) writing the same WeCom conversation keys agree
 * on partitions - and so per-key ordering holds across languages.
 *
 * The reference is the real Java code: tools/java's kmq.tools.PartitionRef
 * computes Utils.toPositive(Utils.murmur2(key)) % n with kafka-clients
 * (BuiltInPartitioner.partitionForKey). It is run once over all keys; the jar path
 * comes from $KMQ_JAVA_TOOLS_JAR (set by tests/partitioner.cmake), the JVM is
 * $KMQ_JAVA or "java". A missing JVM or jar FAILS the test: it is built by
 * scripts/setup.sh, so its absence is a broken set-up, not a reason to skip.
 *
 * Keys with NULL (no key) are deliberately not compared: librdkafka's
 * murmur2_random sends them to a random partition, Java to its sticky partition;
 * neither is a function of the key. */
#include <check.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

typedef struct {
  unsigned char *data;
  size_t len;
  const char *kind; /* for failure messages */
} test_key_t;

typedef struct {
  test_key_t *v;
  size_t n, cap;
} keys_t;

/* Deterministic xorshift64*: the same keys every run, so a failure reproduces. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}
static uint32_t rnd_range(uint32_t lo, uint32_t hi) { /* inclusive */
  return lo + rnd() % (hi - lo + 1);
}

static void add_key(keys_t *k, const void *data, size_t len, const char *kind) {
  if (k->n == k->cap) {
    k->cap = k->cap ? k->cap * 2 : 1024;
    k->v = realloc(k->v, k->cap * sizeof *k->v);
    ck_assert_ptr_nonnull(k->v);
  }
  /* Always a real allocation, even for the empty key: a non-NULL pointer with
   * length 0 is the empty key, which hashes; NULL would mean "no key". */
  unsigned char *copy = malloc(len ? len : 1);
  ck_assert_ptr_nonnull(copy);
  if (len)
    memcpy(copy, data, len);
  k->v[k->n++] = (test_key_t){copy, len, kind};
}

static void add_str(keys_t *k, const char *s, const char *kind) {
  add_key(k, s, strlen(s), kind);
}

/* UTF-8 encoding of one code point below U+10000. */
static size_t utf8(unsigned cp, unsigned char *out) {
  if (cp < 0x80) {
    out[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (unsigned char)(0xC0 | (cp >> 6));
    out[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  out[0] = (unsigned char)(0xE0 | (cp >> 12));
  out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
  out[2] = (unsigned char)(0x80 | (cp & 0x3F));
  return 3;
}

static void gen_keys(keys_t *k) {
  static const char b64url[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  unsigned char buf[10240 + 16];
  char s[256];

  /* The empty (non-NULL) key. */
  add_key(k, "", 0, "empty");

  /* Every length 1..16 of 0xFF and of 0x80 bytes: murmur2's 1-3 byte tail and
   * bytes whose sign differs between C (unsigned char) and Java (signed byte). */
  for (size_t len = 1; len <= 16; len++) {
    memset(buf, 0xFF, len);
    add_key(k, buf, len, "tail-ff");
    memset(buf, 0x80, len);
    add_key(k, buf, len, "tail-80");
    memset(buf, 0x00, len);
    add_key(k, buf, len, "tail-00");
  }

  /* Plain ASCII ids the way applications write them. */
  for (int i = 0; i < 400; i++) {
    snprintf(s, sizeof s, "user-%d", i);
    add_str(k, s, "ascii");
    snprintf(s, sizeof s, "order:%u", rnd());
    add_str(k, s, "ascii");
  }
  for (int i = 0; i < 400; i++) {
    size_t len = rnd_range(1, 64);
    for (size_t j = 0; j < len; j++)
      buf[j] = (unsigned char)rnd_range(0x20, 0x7E);
    add_key(k, buf, len, "ascii-random");
  }

  /* WeCom ids: external_userid (wm/wo + 30 chars), group chat id (wr...), message
   * ids, and corp user ids. */
  static const char *prefixes[] = {"wm", "wo", "wr"};
  for (int i = 0; i < 900; i++) {
    const char *p = prefixes[i % 3];
    size_t len = (i % 5 == 0) ? rnd_range(26, 34) : 30;
    size_t o = (size_t)snprintf(s, sizeof s, "%s", p);
    for (size_t j = 0; j < len; j++)
      s[o++] = b64url[rnd() % 64];
    s[o] = 0;
    add_str(k, s, "wecom-id");
  }
  for (int i = 0; i < 100; i++) {
    snprintf(s, sizeof s, "%u%u_%u_external", rnd(), rnd() % 1000, rnd());
    add_str(k, s, "wecom-msgid");
  }
  add_str(k, "wmXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "wecom-id");
  add_str(k, "woAJ2GCAAAXtWyujaWJHDDGi0mACHAAA", "wecom-id");
  add_str(k, "ZhangSan", "wecom-userid");

  /* Chinese (and other non-ASCII) UTF-8. */
  static const char *zh[] = {"你好", "企业微信", "客户联系", "张三", "会话存档",
                             "群聊：销售一组", "订单号：2024-001", "😀 emoji",
                             "ñandú", "Ωμέγα"};
  for (size_t i = 0; i < sizeof zh / sizeof *zh; i++)
    add_str(k, zh[i], "utf8");
  for (int i = 0; i < 500; i++) {
    size_t chars = rnd_range(1, 24), o = 0;
    for (size_t j = 0; j < chars; j++)
      o += utf8(rnd_range(0x4E00, 0x9FFF), buf + o);
    add_key(k, buf, o, "utf8-cjk");
  }

  /* Random binary, zero bytes included. */
  for (int i = 0; i < 500; i++) {
    size_t len = rnd_range(1, 256);
    for (size_t j = 0; j < len; j++)
      buf[j] = (unsigned char)rnd();
    add_key(k, buf, len, "binary");
  }

  /* Long keys, 1-10 KB. */
  for (int i = 0; i < 40; i++) {
    size_t len = rnd_range(1024, 10240);
    for (size_t j = 0; j < len; j++)
      buf[j] = (i % 2) ? (unsigned char)rnd() : (unsigned char)b64url[rnd() % 64];
    add_key(k, buf, len, "long");
  }
}

static void free_keys(keys_t *k) {
  for (size_t i = 0; i < k->n; i++)
    free(k->v[i].data);
  free(k->v);
}

/* Shell-quotes s into out (single quotes; ' becomes '\''). */
static void shell_quote(const char *s, char *out, size_t size) {
  size_t o = 0;
  ck_assert(size > 2);
  out[o++] = '\'';
  for (; *s; s++) {
    if (*s == '\'') {
      ck_assert(o + 5 < size);
      memcpy(out + o, "'\\''", 4);
      o += 4;
    } else {
      ck_assert(o + 2 < size);
      out[o++] = *s;
    }
  }
  out[o++] = '\'';
  out[o] = 0;
}

static const int32_t counts[] = {4, 12, 7};
#define NCOUNTS (sizeof counts / sizeof *counts)

START_TEST(murmur2_matches_java) {
  const char *jar = getenv("KMQ_JAVA_TOOLS_JAR");
  const char *java = getenv("KMQ_JAVA");
  if (!java || !*java)
    java = "java";
  ck_assert_msg(jar && *jar, "KMQ_JAVA_TOOLS_JAR is not set (tests/partitioner.cmake sets it)");
  ck_assert_msg(access(jar, R_OK) == 0,
                "%s is missing: run scripts/setup.sh (it builds tools/java)", jar);

  keys_t keys = {0};
  gen_keys(&keys);
  ck_assert_uint_ge(keys.n, 3000);

  char errstr[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  /* No bootstrap.servers: the handle never connects; silence its warning. */
  ck_assert_int_eq(rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr),
                   RD_KAFKA_CONF_OK);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  ck_assert_msg(rk, "rd_kafka_new: %s", errstr);
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, "kmq-partitioner-test", NULL);
  ck_assert_ptr_nonnull(rkt);

  /* The query file: "<nparts> <hex>" per line, in (count, key) order. */
  char in_path[] = "/tmp/kmq-partref-in-XXXXXX";
  int fd = mkstemp(in_path);
  ck_assert_int_ge(fd, 0);
  FILE *in = fdopen(fd, "w");
  ck_assert_ptr_nonnull(in);
  int32_t *expect = calloc(keys.n * NCOUNTS, sizeof *expect);
  ck_assert_ptr_nonnull(expect);
  for (size_t c = 0; c < NCOUNTS; c++) {
    for (size_t i = 0; i < keys.n; i++) {
      int32_t p = rd_kafka_msg_partitioner_murmur2_random(rkt, keys.v[i].data, keys.v[i].len,
                                                          counts[c], NULL, NULL);
      ck_assert_int_ge(p, 0);
      ck_assert_int_lt(p, counts[c]);
      expect[c * keys.n + i] = p;
      fprintf(in, "%d ", (int)counts[c]);
      for (size_t j = 0; j < keys.v[i].len; j++)
        fprintf(in, "%02x", keys.v[i].data[j]);
      fputc('\n', in);
    }
  }
  ck_assert_int_eq(fclose(in), 0);

  char qjava[1024], qjar[2048], qin[128], cmd[4096];
  shell_quote(java, qjava, sizeof qjava);
  shell_quote(jar, qjar, sizeof qjar);
  shell_quote(in_path, qin, sizeof qin);
  snprintf(cmd, sizeof cmd, "%s -cp %s kmq.tools.PartitionRef < %s", qjava,
           qjar, qin);
  FILE *out = popen(cmd, "r");
  ck_assert_msg(out, "popen(%s) failed", cmd);

  /* No assertion until pclose+unlink: a failing check ends the test process and
   * would leave the query file behind. */
  char *line = NULL;
  size_t cap = 0;
  size_t got = 0, mismatches = 0, bad = 0;
  while (getline(&line, &cap, out) > 0) {
    char *end;
    long java_p = strtol(line, &end, 10);
    if (got >= keys.n * NCOUNTS || end == line) {
      if (bad++ < 3)
        fprintf(stderr, "PartitionRef line %zu unexpected: %s", got + 1, line);
      got++;
      continue;
    }
    size_t c = got / keys.n, i = got % keys.n;
    if (java_p != expect[got]) {
      if (mismatches++ < 10)
        fprintf(stderr,
                "MISMATCH %s key #%zu (len %zu) nparts %d: librdkafka %d, Java %ld\n",
                keys.v[i].kind, i, keys.v[i].len, (int)counts[c], (int)expect[got], java_p);
    }
    got++;
  }
  free(line);
  int status = pclose(out);
  unlink(in_path);
  ck_assert_msg(status == 0,
                "%s exited with status %d (java missing or jar broken? run scripts/setup.sh)",
                cmd, status);
  ck_assert_msg(bad == 0, "PartitionRef printed %zu unexpected lines", bad);
  ck_assert_msg(got == keys.n * NCOUNTS, "PartitionRef answered %zu of %zu queries", got,
                keys.n * NCOUNTS);
  ck_assert_msg(mismatches == 0, "%zu of %zu partitions differ between librdkafka and Java",
                mismatches, got);
  fprintf(stderr, "partitioner: %zu keys x %zu partition counts agree with Java\n", keys.n,
          NCOUNTS);

  /* No key (NULL): murmur2_random falls back to the random partitioner - any
   * partition in range, not a function of the key, so not compared with Java.
   * (Called outside a produce() call only because this handle has no metadata.) */
  for (int r = 0; r < 50; r++) {
    int32_t p = rd_kafka_msg_partitioner_murmur2_random(rkt, NULL, 0, 12, NULL, NULL);
    ck_assert_int_ge(p, 0);
    ck_assert_int_lt(p, 12);
  }

  free(expect);
  free_keys(&keys);
  rd_kafka_topic_destroy(rkt);
  rd_kafka_destroy(rk);
}
END_TEST

int main(void) {
  Suite *s = suite_create("partitioner");
  TCase *tc = tcase_create("java");
  tcase_add_test(tc, murmur2_matches_java);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
