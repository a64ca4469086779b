package org.leafd.test.kafka;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.TimeoutException;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * A small Kafka client for leafd's integration tests (JDK + kafka-clients only).
 *
 * <pre>
 * LeafdKafkaClient produce            PROPS TOPIC N
 * LeafdKafkaClient produce-continuous PROPS TOPIC
 * LeafdKafkaClient consume            PROPS TOPIC N TIMEOUT_MS
 * LeafdKafkaClient admin-create-topic PROPS TOPIC [PARTITIONS]
 * LeafdKafkaClient admin-acl-allow    PROPS PRINCIPAL RESOURCE OPERATION...
 * LeafdKafkaClient admin-describe-cluster PROPS
 * LeafdKafkaClient admin-describe-broker-config PROPS NODE_ID KEY
 * </pre>
 *
 * PROPS is a client properties file (bootstrap.servers, security.protocol, ssl.*, sasl.*);
 * it may override the defaults set here. Stdout gets exactly one line: "OK ..." (exit 0) or
 * "FAIL exception.Class: message" (exit 1). A usage error prints "USAGE ..." and exits 2.
 * Everything else, including library logging, goes to stderr.
 */
public final class LeafdKafkaClient {
    private static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(5);
    private static final long ACL_VISIBLE_TIMEOUT_MS = 15_000;

    private LeafdKafkaClient() {}

    /** A bad command line: the caller's bug, not a Kafka failure. */
    private static final class UsageException extends Exception {
        UsageException(String message) {
            super(message);
        }
    }

    public static void main(String[] args) {
        // Keep stdout for the one result line: a library that prints (log4j2's default
        // console appender writes to System.out) goes to stderr instead.
        PrintStream result = System.out;
        System.setOut(System.err);
        String line;
        int code;
        try {
            line = run(args);
            code = 0;
        } catch (UsageException e) {
            line = "USAGE " + oneLine(e.getMessage());
            code = 2;
        } catch (Throwable t) {
            Throwable cause = unwrap(t);
            cause.printStackTrace(System.err);
            line = "FAIL " + cause.getClass().getName() + ": " + oneLine(cause.getMessage());
            code = 1;
        }
        result.println(line);
        result.flush();
        System.err.flush();
        // Client threads must not keep the JVM alive after the verdict.
        System.exit(code);
    }

    private static String run(String[] args) throws Exception {
        if (args.length < 2) {
            throw new UsageException("LeafdKafkaClient COMMAND PROPS ARGS...");
        }
        String command = args[0];
        Properties props = load(Path.of(args[1]));
        List<String> rest = List.of(args).subList(2, args.length);
        switch (command) {
            case "produce":
                need(rest, 2, "produce PROPS TOPIC N");
                return produce(props, rest.get(0), count(rest.get(1)));
            case "produce-continuous":
                need(rest, 1, "produce-continuous PROPS TOPIC");
                return produceContinuous(props, rest.get(0));
            case "consume":
                need(rest, 3, "consume PROPS TOPIC N TIMEOUT_MS");
                return consume(props, rest.get(0), count(rest.get(1)), count(rest.get(2)));
            case "admin-create-topic":
                if (rest.size() != 1 && rest.size() != 2) {
                    throw new UsageException("admin-create-topic PROPS TOPIC [PARTITIONS]");
                }
                int partitions = rest.size() == 2 ? (int) count(rest.get(1)) : 1;
                return createTopic(props, rest.get(0), partitions);
            case "admin-acl-allow":
                if (rest.size() < 3) {
                    throw new UsageException(
                            "admin-acl-allow PROPS PRINCIPAL RESOURCE OPERATION...");
                }
                return aclAllow(props, rest.get(0), rest.get(1), rest.subList(2, rest.size()));
            case "admin-describe-cluster":
                need(rest, 0, "admin-describe-cluster PROPS");
                return describeCluster(props);
            case "admin-describe-broker-config":
                need(rest, 2, "admin-describe-broker-config PROPS NODE_ID KEY");
                return describeBrokerConfig(props, rest.get(0), rest.get(1));
            default:
                throw new UsageException("unknown command " + command);
        }
    }

    private static String produce(Properties props, String topic, long n) throws Exception {
        producerDefaults(props);
        KafkaProducer<String, String> producer = new KafkaProducer<>(props);
        try {
            for (long i = 0; i < n; i++) {
                producer.send(new ProducerRecord<>(topic, "k" + i, "leafd-" + i)).get();
            }
        } finally {
            producer.close(CLOSE_TIMEOUT);
        }
        return "OK produced " + n;
    }

    /**
     * One record every ~20 ms until stdin closes or reads "stop". Prints "first record
     * acknowledged" and each failure's cause to stderr.
     */
    private static String produceContinuous(Properties props, String topic) throws Exception {
        producerDefaults(props);
        AtomicBoolean stop = new AtomicBoolean(false);
        Thread stdin = new Thread(() -> {
            try (BufferedReader in = new BufferedReader(
                    new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                String l;
                while ((l = in.readLine()) != null) {
                    if (l.trim().equals("stop")) {
                        break;
                    }
                }
            } catch (IOException e) {
                System.err.println("reading stdin failed: " + e);
            }
            stop.set(true);
        }, "stdin");
        stdin.setDaemon(true);
        stdin.start();

        AtomicLong sent = new AtomicLong();
        AtomicLong failed = new AtomicLong();
        KafkaProducer<String, String> producer = new KafkaProducer<>(props);
        try {
            long i = 0;
            while (!stop.get()) {
                long seq = i++;
                try {
                    producer.send(new ProducerRecord<>(topic, "k" + seq, "leafd-" + seq),
                            (metadata, e) -> {
                                if (e == null) {
                                    if (sent.incrementAndGet() == 1) {
                                        System.err.println("first record acknowledged");
                                    }
                                } else {
                                    failed.incrementAndGet();
                                    System.err.println("send " + seq + " failed: " + e);
                                }
                            });
                } catch (Exception e) {
                    failed.incrementAndGet();
                    System.err.println("send " + seq + " failed: " + e);
                }
                Thread.sleep(20);
            }
            producer.flush();
        } finally {
            producer.close(CLOSE_TIMEOUT);
        }
        return "OK sent=" + sent.get() + " failed=" + failed.get();
    }

    private static String consume(Properties props, String topic, long n, long timeoutMs)
            throws Exception {
        props.putIfAbsent(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG,
                StringDeserializer.class.getName());
        props.putIfAbsent(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG,
                StringDeserializer.class.getName());
        props.putIfAbsent(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.putIfAbsent(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.putIfAbsent(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        props.putIfAbsent(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG,
                Long.toString(Math.max(timeoutMs, 1000)));
        long deadline = System.currentTimeMillis() + timeoutMs;
        KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props);
        try {
            if (props.containsKey(ConsumerConfig.GROUP_ID_CONFIG)) {
                consumer.subscribe(List.of(topic));
            } else {
                // No group: no group ACL needed, and no offsets are committed.
                List<TopicPartition> parts = partitions(consumer, topic, deadline);
                consumer.assign(parts);
                consumer.seekToBeginning(parts);
            }
            long count = 0;
            while (count < n) {
                long left = deadline - System.currentTimeMillis();
                if (left <= 0) {
                    throw new TimeoutException("consumed " + count + " of " + n
                            + " records within " + timeoutMs + " ms");
                }
                ConsumerRecords<String, String> records =
                        consumer.poll(Duration.ofMillis(Math.min(left, 500)));
                count += records.count();
            }
        } finally {
            consumer.close(CLOSE_TIMEOUT);
        }
        return "OK consumed " + n;
    }

    /** The topic's partitions; a topic the broker does not know yet is retried. */
    private static List<TopicPartition> partitions(
            KafkaConsumer<String, String> consumer, String topic, long deadline)
            throws Exception {
        while (true) {
            long left = Math.max(deadline - System.currentTimeMillis(), 1);
            List<PartitionInfo> infos = consumer.partitionsFor(topic, Duration.ofMillis(left));
            if (infos != null && !infos.isEmpty()) {
                return infos.stream()
                        .map(p -> new TopicPartition(p.topic(), p.partition()))
                        .collect(Collectors.toList());
            }
            if (System.currentTimeMillis() >= deadline) {
                throw new TimeoutException("no partitions for topic " + topic);
            }
            Thread.sleep(100);
        }
    }

    private static String createTopic(Properties props, String topic, int partitions)
            throws Exception {
        try (Admin admin = admin(props)) {
            admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all().get();
        }
        return "OK created " + topic;
    }

    /**
     * RESOURCE is "cluster", "group:NAME", "topic:NAME", "transactional-id:NAME" or a bare
     * topic name. OPERATION is an AclOperation name (READ, WRITE, DESCRIBE, ALTER_CONFIGS...).
     * Returns once the broker the client talks to shows the new ACLs, so the next request
     * sees them.
     */
    private static String aclAllow(Properties props, String principal, String resource,
            List<String> operations) throws Exception {
        ResourcePattern pattern = resourcePattern(resource);
        List<AclBinding> bindings = new ArrayList<>();
        for (String op : operations) {
            AclOperation operation = AclOperation.fromString(op);
            if (operation == AclOperation.UNKNOWN || operation == AclOperation.ANY) {
                throw new UsageException("unknown ACL operation " + op);
            }
            bindings.add(new AclBinding(pattern,
                    new AccessControlEntry(principal, "*", operation, AclPermissionType.ALLOW)));
        }
        try (Admin admin = admin(props)) {
            admin.createAcls(bindings).all().get();
            // The controller has committed the ACLs; the broker applies them asynchronously.
            long deadline = System.currentTimeMillis() + ACL_VISIBLE_TIMEOUT_MS;
            while (true) {
                Collection<AclBinding> seen =
                        admin.describeAcls(AclBindingFilter.ANY).values().get();
                if (seen.containsAll(bindings)) {
                    break;
                }
                if (System.currentTimeMillis() >= deadline) {
                    throw new TimeoutException("the broker does not show the new ACLs");
                }
                Thread.sleep(50);
            }
        }
        return "OK acls=" + bindings.size();
    }

    private static ResourcePattern resourcePattern(String resource) throws UsageException {
        if (resource.equals("cluster")) {
            return new ResourcePattern(ResourceType.CLUSTER, "kafka-cluster", PatternType.LITERAL);
        }
        int colon = resource.indexOf(':');
        if (colon > 0) {
            String kind = resource.substring(0, colon);
            String name = resource.substring(colon + 1);
            switch (kind) {
                case "topic":
                    return new ResourcePattern(ResourceType.TOPIC, name, PatternType.LITERAL);
                case "group":
                    return new ResourcePattern(ResourceType.GROUP, name, PatternType.LITERAL);
                case "transactional-id":
                    return new ResourcePattern(
                            ResourceType.TRANSACTIONAL_ID, name, PatternType.LITERAL);
                default:
                    throw new UsageException("unknown resource kind " + kind);
            }
        }
        return new ResourcePattern(ResourceType.TOPIC, resource, PatternType.LITERAL);
    }

    private static String describeCluster(Properties props) throws Exception {
        try (Admin admin = admin(props)) {
            DescribeClusterResult r = admin.describeCluster();
            String id = r.clusterId().get();
            Node controller = r.controller().get();
            String nodes = r.nodes().get().stream()
                    .map(n -> n.id() + "@" + n.host() + ":" + n.port())
                    .sorted()
                    .collect(Collectors.joining(","));
            return "OK cluster-id=" + id + " controller=" + controller.id() + " nodes=" + nodes;
        }
    }

    private static String describeBrokerConfig(Properties props, String node, String key)
            throws Exception {
        ConfigResource resource = new ConfigResource(ConfigResource.Type.BROKER, node);
        try (Admin admin = admin(props)) {
            Config config = admin.describeConfigs(List.of(resource)).all().get().get(resource);
            ConfigEntry entry = config.get(key);
            if (entry == null) {
                return "OK " + key + " absent";
            }
            return "OK " + key + "=" + entry.value() + " source=" + entry.source();
        }
    }

    private static Admin admin(Properties props) {
        props.putIfAbsent(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        props.putIfAbsent(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        return Admin.create(props);
    }

    private static void producerDefaults(Properties props) {
        props.putIfAbsent(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG,
                StringSerializer.class.getName());
        props.putIfAbsent(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG,
                StringSerializer.class.getName());
        props.putIfAbsent(ProducerConfig.ACKS_CONFIG, "all");
        props.putIfAbsent(ProducerConfig.LINGER_MS_CONFIG, "0");
        props.putIfAbsent(ProducerConfig.MAX_BLOCK_MS_CONFIG, "20000");
        props.putIfAbsent(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        props.putIfAbsent(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
    }

    private static Properties load(Path path) throws IOException {
        Properties props = new Properties();
        try (Reader r = Files.newBufferedReader(path, StandardCharsets.UTF_8)) {
            props.load(r);
        }
        return props;
    }

    private static void need(List<String> rest, int n, String usage) throws UsageException {
        if (rest.size() != n) {
            throw new UsageException(usage);
        }
    }

    private static long count(String s) throws UsageException {
        try {
            long n = Long.parseLong(s);
            if (n < 0) {
                throw new NumberFormatException();
            }
            return n;
        } catch (NumberFormatException e) {
            throw new UsageException("not a count: " + s);
        }
    }

    private static Throwable unwrap(Throwable t) {
        while ((t instanceof ExecutionException || t instanceof CompletionException)
                && t.getCause() != null) {
            t = t.getCause();
        }
        return t;
    }

    private static String oneLine(String s) {
        return s == null ? "" : s.replaceAll("\\s*[\\r\\n]+\\s*", " ").trim();
    }
}
