/*
 * Reads topics from the beginning with Kafka's Java consumer and prints one
 * JSON line per record: topic, partition, offset, timestamp (and its type),
 * key, value and headers, with byte-exact base64 next to the text, and a null
 * header value shown as JSON null (not as an empty string). The smoke test
 * (scripts/cdc-smoke.sh) uses it to look at what the Connect worker wrote;
 * Debian's kcat cannot talk to Tansu.
 *
 * Usage: java -cp JARS:CLASSES TopicDump BROKERS TIMEOUT_MS MIN_RECORDS TOPIC...
 * Stops after MIN_RECORDS records or TIMEOUT_MS, whichever comes first.
 */

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;

import com.fasterxml.jackson.databind.ObjectMapper;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public final class TopicDump {
    public static void main(String[] args) throws Exception {
        if (args.length < 4) {
            System.err.println("usage: TopicDump BROKERS TIMEOUT_MS MIN_RECORDS TOPIC...");
            System.exit(64);
        }
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, "topic-dump-" + UUID.randomUUID());
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "6000");
        props.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
        long deadline = System.currentTimeMillis() + Long.parseLong(args[1]);
        int want = Integer.parseInt(args[2]);
        List<String> topics = List.of(args).subList(3, args.length);
        ObjectMapper json = new ObjectMapper();
        int seen = 0;
        try (KafkaConsumer<byte[], byte[]> consumer =
                new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            consumer.subscribe(topics);
            while (seen < want && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    Map<String, Object> line = new LinkedHashMap<>();
                    line.put("topic", r.topic());
                    line.put("partition", r.partition());
                    line.put("offset", r.offset());
                    line.put("timestamp", r.timestamp());
                    line.put("timestampType", r.timestampType().toString());
                    line.put("key", text(r.key()));
                    line.put("value", text(r.value()));
                    line.put("valueBase64", r.value() == null ? null : Base64.getEncoder().encodeToString(r.value()));
                    List<Object> headers = new ArrayList<>();
                    for (Header h : r.headers()) {
                        Map<String, Object> header = new LinkedHashMap<>();
                        header.put("key", h.key());
                        header.put("value", text(h.value()));
                        headers.add(header);
                    }
                    line.put("headers", headers);
                    System.out.println(json.writeValueAsString(line));
                    seen++;
                }
            }
        }
        System.exit(seen >= want ? 0 : 1);
    }

    static String text(byte[] bytes) {
        return bytes == null ? null : new String(bytes, StandardCharsets.UTF_8);
    }

    private TopicDump() {
    }
}
