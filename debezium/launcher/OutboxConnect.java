/*
 * A Kafka Connect standalone worker without the REST server, for machines
 * where Connect's own ConnectStandalone cannot start (see debezium/README.md).
 *
 * It does what org.apache.kafka.connect.cli.ConnectStandalone does, in the
 * same order and with the same classes: Plugins (plugin.discovery from the
 * worker config), StandaloneConfig, the connector client override policy, a
 * FileOffsetBackingStore with Connect's internal JSON converter, Worker,
 * StandaloneHerder, then putConnectorConfig. Records therefore go through
 * Connect's own WorkerSourceTask and KafkaProducer (acks=all, murmur2
 * partitioner, header converter, topic.creation) exactly as in a Connect
 * cluster.
 *
 * The connector settings are read from the production connector file
 * (debezium/payment-outbox-connector.json, the body of
 * PUT /connectors/NAME/config). Only the keys in OVERRIDABLE may be replaced,
 * by --set KEY=VALUE: hosts and the connector class. Anything else differs
 * nowhere, and the launcher refuses to change it.
 *
 * Usage:
 *   java -cp JARS:CLASSES OutboxConnect --worker worker.properties
 *        --connector payment-outbox-connector.json --name payment-outbox
 *        [--set KEY=VALUE]... [--ready-file PATH] [--check]
 *
 * --ready-file is written once the connector's binlog reader is connected
 * (Debezium's streaming MBean says Connected=true) and removed at exit.
 * --check only lists connector keys that neither Connect, the connector nor
 * the transforms define (settings this version does not know), then exits.
 */

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;

import javax.management.MBeanServer;
import javax.management.ObjectName;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.ObjectMapper;

import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.utils.Time;
import org.apache.kafka.common.utils.Utils;
import org.apache.kafka.connect.connector.Connector;
import org.apache.kafka.connect.connector.policy.ConnectorClientConfigOverridePolicy;
import org.apache.kafka.connect.json.JsonConverter;
import org.apache.kafka.connect.json.JsonConverterConfig;
import org.apache.kafka.connect.runtime.ConnectorConfig;
import org.apache.kafka.connect.runtime.Herder;
import org.apache.kafka.connect.runtime.SourceConnectorConfig;
import org.apache.kafka.connect.runtime.Worker;
import org.apache.kafka.connect.runtime.WorkerConfig;
import org.apache.kafka.connect.runtime.isolation.Plugins;
import org.apache.kafka.connect.runtime.rest.entities.ConnectorInfo;
import org.apache.kafka.connect.runtime.rest.entities.ConnectorStateInfo;
import org.apache.kafka.connect.runtime.standalone.StandaloneConfig;
import org.apache.kafka.connect.runtime.standalone.StandaloneHerder;
import org.apache.kafka.connect.storage.FileOffsetBackingStore;
import org.apache.kafka.connect.transforms.Transformation;
import org.apache.kafka.connect.util.FutureCallback;

public final class OutboxConnect {

    /** The only connector keys a deployment may change (hosts, class). */
    static final Set<String> OVERRIDABLE = Set.of(
            "connector.class",
            "database.hostname",
            "database.port",
            "schema.history.internal.kafka.bootstrap.servers");

    public static void main(String[] args) throws Exception {
        Path workerFile = null;
        Path connectorFile = null;
        Path readyFile = null;
        String name = null;
        boolean check = false;
        Map<String, String> overrides = new LinkedHashMap<>();
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--worker" -> workerFile = Path.of(args[++i]);
                case "--connector" -> connectorFile = Path.of(args[++i]);
                case "--name" -> name = args[++i];
                case "--ready-file" -> readyFile = Path.of(args[++i]);
                case "--check" -> check = true;
                case "--set" -> {
                    String kv = args[++i];
                    int eq = kv.indexOf('=');
                    if (eq <= 0) {
                        fail("--set wants KEY=VALUE, got: " + kv);
                    }
                    overrides.put(kv.substring(0, eq), kv.substring(eq + 1));
                }
                default -> fail("unknown argument: " + args[i]);
            }
        }
        if (workerFile == null || connectorFile == null || name == null) {
            fail("usage: OutboxConnect --worker FILE --connector FILE --name NAME"
                    + " [--set KEY=VALUE]... [--ready-file PATH] [--check]");
        }

        Map<String, String> connectorConfig = connectorConfig(connectorFile, name, overrides);
        Map<String, String> workerProps = Utils.propsToStringMap(Utils.loadProps(workerFile.toString()));

        // ---- as AbstractConnectCli.startConnect ----
        long t0 = System.nanoTime();
        Plugins plugins = new Plugins(workerProps);
        plugins.compareAndSwapWithDelegatingLoader();
        StandaloneConfig config = new StandaloneConfig(workerProps);

        if (check) {
            Set<String> unknown = unknownKeys(plugins, connectorConfig);
            unknown.forEach(key -> System.out.println("unknown: " + key));
            System.exit(unknown.isEmpty() ? 0 : 3);
        }

        String kafkaClusterId = config.kafkaClusterId();
        ConnectorClientConfigOverridePolicy policy = plugins.newPlugin(
                config.getString(WorkerConfig.CONNECTOR_CLIENT_POLICY_CLASS_CONFIG),
                config, ConnectorClientConfigOverridePolicy.class);
        // No REST server, so no advertised URL: a stable worker id instead.
        String workerId = "outbox-connect:" + name;

        // ---- as ConnectStandalone.createHerder ----
        FileOffsetBackingStore offsets = new FileOffsetBackingStore(plugins.newInternalConverter(
                true, JsonConverter.class.getName(),
                Collections.singletonMap(JsonConverterConfig.SCHEMAS_ENABLE_CONFIG, "false")));
        offsets.configure(config);
        Worker worker = new Worker(workerId, Time.SYSTEM, plugins, config, offsets, policy);
        StandaloneHerder herder = new StandaloneHerder(worker, kafkaClusterId, policy);

        // ---- as Connect.start / Connect.stop ----
        final Path ready = readyFile;
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            log("stopping");
            if (ready != null) {
                try {
                    Files.deleteIfExists(ready);
                } catch (IOException ignored) {
                    // best effort
                }
            }
            herder.stop();
            log("stopped");
        }, "outbox-connect-shutdown"));
        herder.start();

        // ---- as ConnectStandalone.processExtraArgs ----
        FutureCallback<Herder.Created<ConnectorInfo>> created = new FutureCallback<>();
        herder.putConnectorConfig(name, connectorConfig, true, created);
        created.get(60, TimeUnit.SECONDS);
        log(String.format("connector %s created (%s) in %d ms", name,
                connectorConfig.get("connector.class"), (System.nanoTime() - t0) / 1_000_000));

        if (readyFile != null) {
            awaitStreaming(herder, name, connectorConfig.get("topic.prefix"), readyFile, t0);
        }
        Thread.currentThread().join(); // until a signal runs the shutdown hook
    }

    /** The production file, with only OVERRIDABLE keys replaced, plus the name. */
    static Map<String, String> connectorConfig(Path file, String name, Map<String, String> overrides)
            throws IOException {
        Map<String, String> config = new ObjectMapper().readValue(
                file.toFile(), new TypeReference<LinkedHashMap<String, String>>() { });
        for (Map.Entry<String, String> e : overrides.entrySet()) {
            if (!OVERRIDABLE.contains(e.getKey())) {
                fail("--set " + e.getKey() + ": only " + new TreeSet<>(OVERRIDABLE)
                        + " may differ from " + file);
            }
            if (!config.containsKey(e.getKey())) {
                fail("--set " + e.getKey() + ": not in " + file);
            }
            config.put(e.getKey(), e.getValue());
        }
        // PUT /connectors/NAME/config takes the name from the URL.
        config.putIfAbsent(ConnectorConfig.NAME_CONFIG, name);
        return config;
    }

    /** Keys that no ConfigDef involved (Connect, connector, transforms) defines. */
    static Set<String> unknownKeys(Plugins plugins, Map<String, String> config) throws Exception {
        Set<String> known = new TreeSet<>();
        ConfigDef connect = SourceConnectorConfig.configDef();
        known.addAll(connect.names());
        Connector connector = plugins.newConnector(config.get("connector.class"));
        known.addAll(connector.config().names());
        Set<String> unknown = new TreeSet<>();
        String transforms = config.getOrDefault("transforms", "");
        Map<String, Set<String>> transformKeys = new LinkedHashMap<>();
        for (String alias : transforms.split(",")) {
            alias = alias.trim();
            if (alias.isEmpty()) {
                continue;
            }
            String type = config.get("transforms." + alias + ".type");
            @SuppressWarnings("unchecked")
            Transformation<?> t = (Transformation<?>) plugins.newPlugin(type, (org.apache.maven.artifact.versioning.VersionRange) null);
            transformKeys.put("transforms." + alias + ".", t.config().names());
        }
        for (String key : config.keySet()) {
            if (known.contains(key) || key.startsWith("topic.creation.")
                    || key.startsWith("producer.override.") || key.startsWith("consumer.override.")
                    || key.startsWith("schema.history.internal.")) {
                // topic.creation.<group>.* are Kafka topic configs; the
                // schema history keys are checked by the connector's own
                // validation when it starts.
                continue;
            }
            boolean matched = false;
            for (Map.Entry<String, Set<String>> e : transformKeys.entrySet()) {
                if (key.startsWith(e.getKey())) {
                    String rest = key.substring(e.getKey().length());
                    matched = rest.equals("type") || e.getValue().contains(rest);
                }
            }
            if (!matched && !key.equals("transforms")) {
                unknown.add(key);
            }
        }
        return unknown;
    }

    /** Writes readyFile once the task runs and its binlog reader is connected. */
    static void awaitStreaming(StandaloneHerder herder, String name, String prefix, Path readyFile, long t0)
            throws Exception {
        MBeanServer mbeans = ManagementFactory.getPlatformMBeanServer();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (System.nanoTime() < deadline) {
            ConnectorStateInfo status = herder.connectorStatus(name);
            for (ConnectorStateInfo.TaskState task : status.tasks()) {
                if ("FAILED".equals(task.state())) {
                    log("task failed: " + task.trace());
                    System.exit(2);
                }
            }
            Set<ObjectName> streaming = mbeans.queryNames(
                    new ObjectName("debezium.*:type=connector-metrics,context=streaming,*"), null);
            for (ObjectName on : streaming) {
                if (prefix.equals(on.getKeyProperty("server"))
                        && Boolean.TRUE.equals(mbeans.getAttribute(on, "Connected"))) {
                    Files.writeString(readyFile, ProcessHandle.current().pid() + "\n");
                    log(String.format("streaming (%s) %d ms after start", on,
                            (System.nanoTime() - t0) / 1_000_000));
                    return;
                }
            }
            Thread.sleep(50);
        }
        log("connector not streaming after 120 s");
        System.exit(2);
    }

    static void log(String message) {
        System.err.println("outbox-connect: " + message);
    }

    static void fail(String message) {
        log(message);
        System.exit(64);
    }

    private OutboxConnect() {
    }
}
