package kmq.tools;

import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;
import java.util.HexFormat;
import org.apache.kafka.common.utils.Utils;

/**
 * Reference for kmq's partitioner test: which partition the Java producer's default
 * partitioner picks for a non-null key.
 *
 * <p>stdin: one query per line, {@code <nparts> <hexkey>}, the key's bytes in hex (an
 * empty hex string is the empty, non-null key). stdout: one partition per line, in
 * order. The computation is {@code Utils.toPositive(Utils.murmur2(key)) % nparts},
 * exactly what BuiltInPartitioner.partitionForKey does in kafka-clients. (Null keys
 * are not a question this tool answers: Java spreads them with its sticky
 * partitioner, librdkafka's murmur2_random picks at random.)
 *
 * <p>Exit status 0 on success; 2 on a malformed line (with its number on stderr), so a
 * caller never mistakes a parse error for a short answer.
 */
public final class PartitionRef {
  private PartitionRef() {}

  public static void main(String[] args) throws IOException {
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII), 1 << 16);
    BufferedWriter out =
        new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.US_ASCII), 1 << 16);
    HexFormat hex = HexFormat.of();
    String line;
    long lineNo = 0;
    while ((line = in.readLine()) != null) {
      lineNo++;
      int sp = line.indexOf(' ');
      String countText = sp < 0 ? line : line.substring(0, sp);
      String keyHex = sp < 0 ? "" : line.substring(sp + 1).strip();
      int nparts;
      byte[] key;
      try {
        nparts = Integer.parseInt(countText.strip());
        key = hex.parseHex(keyHex);
      } catch (IllegalArgumentException e) {
        System.err.println("PartitionRef: line " + lineNo + ": " + e.getMessage());
        out.flush();
        System.exit(2);
        return;
      }
      if (nparts <= 0) {
        System.err.println("PartitionRef: line " + lineNo + ": partition count must be > 0");
        out.flush();
        System.exit(2);
        return;
      }
      out.write(Integer.toString(Utils.toPositive(Utils.murmur2(key)) % nparts));
      out.newLine();
    }
    out.flush();
  }
}
