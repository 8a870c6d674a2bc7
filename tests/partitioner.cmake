# librdkafka's murmur2_random partitioner vs the Java client's default partitioner.
# Label "java": needs a JVM and the reference jar that scripts/setup.sh builds from
# tools/java into .cache/java/ (the test fails, not skips, when either is missing).
kmq_add_test(test_partitioner SOURCES test_partitioner.c LIBS kmq_core LABELS "java"
             TIMEOUT 120)
# APPEND: kmq_add_test already set CK_DEFAULT_TIMEOUT in ENVIRONMENT.
set_property(TEST test_partitioner APPEND PROPERTY ENVIRONMENT
             "KMQ_JAVA_TOOLS_JAR=${PROJECT_SOURCE_DIR}/.cache/java/kmq-java-tools.jar")
