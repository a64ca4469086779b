import java.io.*;
import java.net.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.security.*;
import java.security.cert.*;
import java.security.cert.Certificate;
import java.security.spec.*;
import java.util.*;
import java.util.concurrent.*;
import java.util.regex.*;
import javax.net.ssl.*;

/**
 * Loads Kafka keystores and truststores the way Apache Kafka's DefaultSslEngineFactory does
 * (JDK only, no Kafka jars) and runs mutual-TLS handshakes and PKIX validations with them.
 *
 * <pre>
 * load --role keystore|truststore --type PKCS12|JKS|PEM --path P [--password-file F]
 * handshake --server-keystore T:P[:F] --server-truststore T:P[:F]
 *           --client-keystore T:P[:F] --client-truststore T:P[:F] [--host H]
 * pkix --chain CHAIN.pem --trust ROOTS.pem
 * principal --cert CERT [--rules-file RULES]
 *                  (X500Principal.getName() of CERT's subject, which Kafka's
 *                  DefaultKafkaPrincipalBuilder maps, and with RULES the name after
 *                  ssl.principal.mapping.rules; "OK name=HEX [mapped=HEX]", HEX being the
 *                  UTF-8 bytes, so any character survives the one-line protocol)
 * batch            (one command per stdin line, one result line per command)
 * serve --keystore T:P[:F] --truststore T:P[:F] --port-file F
 *                  (TLSv1.3 server on 127.0.0.1, want client auth, serving handshakes until
 *                  stdin closes; stdin "reload T:P[:F] T:P[:F]" swaps the SSLContext for new
 *                  connections, as Kafka does, and prints "OK reloaded" or "FAIL ...")
 * </pre>
 *
 * Every command prints exactly one line, "OK ..." or "FAIL ...". Exit status: 0 for OK, 1 for
 * FAIL, 2 for a usage error ("FAIL usage: ...").
 */
public final class KafkaStoreCheck {
    private static final int TIMEOUT_MS = 10_000;

    /** Same name as Kafka's exception for configuration errors, so messages read alike. */
    static final class InvalidConfigurationException extends Exception {
        private static final long serialVersionUID = 1L;

        InvalidConfigurationException(String message) {
            super(message);
        }

        InvalidConfigurationException(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /** A malformed command line: a bug in the caller, not in the store being checked. */
    static final class UsageException extends Exception {
        private static final long serialVersionUID = 1L;

        UsageException(String message) {
            super(message);
        }
    }

    /** A store as Kafka's ssl.{keystore,truststore}.{type,location,password} describe it. */
    record StoreSpec(String type, Path path, char[] password) {
        static StoreSpec parse(String spec) throws Exception {
            String[] parts = spec.split(":", 3);
            if (parts.length < 2 || parts[1].isEmpty()) {
                throw new UsageException("store must be TYPE:PATH[:PASSWORD_FILE], got " + spec);
            }
            char[] password = parts.length == 3 ? readPassword(Path.of(parts[2])) : null;
            return new StoreSpec(checkType(parts[0]), Path.of(parts[1]), password);
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length == 1 && args[0].equals("batch")) {
            batch();
            return;
        }
        if (args.length > 0 && args[0].equals("serve")) {
            System.exit(serve(args));
        }
        int status = runAndPrint(args);
        System.exit(status);
    }

    private static void batch() throws Exception {
        BufferedReader in =
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            String trimmed = line.trim();
            runAndPrint(trimmed.isEmpty() ? new String[0] : trimmed.split("\\s+"));
        }
    }

    /** Runs one command, prints its single result line and returns the exit status. */
    private static int runAndPrint(String[] args) {
        String line;
        int status;
        try {
            line = "OK" + run(args);
            status = 0;
        } catch (UsageException e) {
            line = "FAIL usage: " + e.getMessage();
            status = 2;
        } catch (Throwable e) {
            line = "FAIL " + describe(e);
            status = 1;
        }
        System.out.println(line.replaceAll("[\\r\\n]+", " "));
        System.out.flush();
        return status;
    }

    private static String run(String[] args) throws Exception {
        if (args.length == 0) {
            throw new UsageException("expected load, handshake, pkix, principal or batch");
        }
        Map<String, String> opts = options(args);
        switch (args[0]) {
            case "load":
                return load(opts);
            case "handshake":
                return handshake(opts);
            case "pkix":
                return pkix(opts);
            case "principal":
                return principal(opts);
            case "batch":
                throw new UsageException("batch takes no options and cannot be nested");
            default:
                throw new UsageException("unknown command " + args[0]);
        }
    }

    private static Map<String, String> options(String[] args) throws UsageException {
        Map<String, String> opts = new HashMap<>();
        for (int i = 1; i < args.length; i += 2) {
            if (!args[i].startsWith("--") || i + 1 >= args.length) {
                throw new UsageException("expected --option value pairs, got " + args[i]);
            }
            if (opts.put(args[i], args[i + 1]) != null) {
                throw new UsageException("option given twice: " + args[i]);
            }
        }
        return opts;
    }

    private static String required(Map<String, String> opts, String name) throws UsageException {
        String value = opts.remove(name);
        if (value == null) {
            throw new UsageException("missing " + name);
        }
        return value;
    }

    private static void noneLeft(Map<String, String> opts) throws UsageException {
        if (!opts.isEmpty()) {
            throw new UsageException("unknown options " + opts.keySet());
        }
    }

    private static String checkType(String type) throws UsageException {
        if (!type.equals("PKCS12") && !type.equals("JKS") && !type.equals("PEM")) {
            throw new UsageException("type must be PKCS12, JKS or PEM, got " + type);
        }
        return type;
    }

    /** The whole file, minus one trailing newline (so "echo secret > f" works too). */
    private static char[] readPassword(Path file) throws Exception {
        String text = Files.readString(file, StandardCharsets.UTF_8);
        if (text.endsWith("\r\n")) {
            text = text.substring(0, text.length() - 2);
        } else if (text.endsWith("\n")) {
            text = text.substring(0, text.length() - 1);
        }
        return text.toCharArray();
    }

    // ---------------------------------------------------------------- load

    private static String load(Map<String, String> opts) throws Exception {
        String role = required(opts, "--role");
        String type = checkType(required(opts, "--type"));
        Path path = Path.of(required(opts, "--path"));
        String passwordFile = opts.remove("--password-file");
        noneLeft(opts);
        char[] password = passwordFile == null ? null : readPassword(Path.of(passwordFile));
        StoreSpec spec = new StoreSpec(type, path, password);
        switch (role) {
            case "keystore": {
                KeyStore ks = keystore(spec);
                keyManagers(ks, spec);
                return describeKeystore(ks);
            }
            case "truststore": {
                KeyStore ts = truststore(spec);
                trustManagers(ts);
                return " truststore trusted=" + trustedCount(ts);
            }
            default:
                throw new UsageException("role must be keystore or truststore, got " + role);
        }
    }

    /** Kafka's createKeystore(): file stores need a password, PEM stores must not have one. */
    static KeyStore keystore(StoreSpec spec) throws Exception {
        if (spec.type().equals("PEM")) {
            if (spec.password() != null) {
                throw new InvalidConfigurationException(
                        "SSL key store password cannot be specified with PEM format,"
                                + " only key password may be specified");
            }
            return pemKeystore(Files.readString(spec.path(), StandardCharsets.UTF_8));
        }
        if (spec.password() == null) {
            throw new InvalidConfigurationException(
                    "SSL key store is specified, but key store password is not specified.");
        }
        return fileStore(spec);
    }

    /** Kafka's createTruststore(): the password is optional for file stores, banned for PEM. */
    static KeyStore truststore(StoreSpec spec) throws Exception {
        KeyStore ts;
        if (spec.type().equals("PEM")) {
            if (spec.password() != null) {
                throw new InvalidConfigurationException(
                        "SSL trust store password cannot be specified for PEM format.");
            }
            ts = pemTruststore(Files.readString(spec.path(), StandardCharsets.UTF_8));
        } else {
            ts = fileStore(spec);
        }
        int trusted = trustedCount(ts);
        if (trusted == 0) {
            throw new InvalidAlgorithmParameterException(
                    "the trustAnchors parameter must be non-empty (truststore entries="
                            + ts.size() + ", trusted certificate entries=0)");
        }
        return ts;
    }

    private static KeyStore fileStore(StoreSpec spec) throws Exception {
        try (InputStream in = Files.newInputStream(spec.path())) {
            KeyStore ks = KeyStore.getInstance(spec.type());
            ks.load(in, spec.password());
            return ks;
        }
    }

    /**
     * SunX509 is KeyManagerFactory.getDefaultAlgorithm(); Kafka's key password falls back to
     * the store password (and is null for PEM).
     */
    static KeyManager[] keyManagers(KeyStore ks, StoreSpec spec) throws Exception {
        KeyManagerFactory kmf = KeyManagerFactory.getInstance("SunX509");
        kmf.init(ks, spec.password());
        return kmf.getKeyManagers();
    }

    static TrustManager[] trustManagers(KeyStore ts) throws Exception {
        TrustManagerFactory tmf = TrustManagerFactory.getInstance("PKIX");
        tmf.init(ts);
        return tmf.getTrustManagers();
    }

    private static int trustedCount(KeyStore ts) throws Exception {
        int n = 0;
        for (String alias : Collections.list(ts.aliases())) {
            if (ts.isCertificateEntry(alias)) {
                n++;
            }
        }
        return n;
    }

    private static String describeKeystore(KeyStore ks) throws Exception {
        List<String> keyAliases = new ArrayList<>();
        for (String alias : Collections.list(ks.aliases())) {
            if (ks.isKeyEntry(alias)) {
                keyAliases.add(alias);
            }
        }
        if (keyAliases.isEmpty()) {
            throw new InvalidConfigurationException(
                    "no private key entry in keystore (entries=" + ks.size() + ")");
        }
        Collections.sort(keyAliases);
        Certificate[] chain = ks.getCertificateChain(keyAliases.get(0));
        if (chain == null || chain.length == 0 || !(chain[0] instanceof X509Certificate)) {
            throw new InvalidConfigurationException(
                    "key entry " + keyAliases.get(0) + " has no X.509 certificate chain");
        }
        X509Certificate leaf = (X509Certificate) chain[0];
        return " keystore key-entries=" + keyAliases.size() + " chain-length=" + chain.length
                + " subject=" + leaf.getSubjectX500Principal().getName();
    }

    // ---------------------------------------------------------------- PEM (KIP-651)

    /**
     * Kafka's PEM parser: a BEGIN line whose label ends in the given name (so "PRIVATE KEY" also
     * matches "ENCRYPTED PRIVATE KEY" and "RSA PRIVATE KEY"), optional "Header: value" lines,
     * base64, and the END line. Text between blocks is ignored.
     */
    private static List<byte[]> pemBlocks(String text, String name) {
        String label = "-+%s\\s*.*" + name.replace(" ", "\\s+") + "[^-]*-+\\s+";
        Pattern pattern = Pattern.compile(String.format(label, "BEGIN")
                + "(?:\\s*[^\\r\\n]*:[^\\r\\n]*[\\r\\n]+)*"
                + "([a-zA-Z0-9/+=\\s]*)"
                + String.format(label, "END"));
        Matcher m = pattern.matcher(text + "\n");
        List<byte[]> blocks = new ArrayList<>();
        while (m.find()) {
            blocks.add(Base64.getDecoder().decode(m.group(1).replaceAll("\\s", "")));
        }
        return blocks;
    }

    private static Certificate[] pemCertificates(String text) throws Exception {
        List<byte[]> blocks = pemBlocks(text, "CERTIFICATE");
        if (blocks.isEmpty()) {
            throw new InvalidConfigurationException("No matching CERTIFICATE entries in PEM file");
        }
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        Certificate[] certs = new Certificate[blocks.size()];
        for (int i = 0; i < certs.length; i++) {
            certs[i] = cf.generateCertificate(new ByteArrayInputStream(blocks.get(i)));
        }
        return certs;
    }

    private static PrivateKey pemPrivateKey(String text) throws Exception {
        List<byte[]> blocks = pemBlocks(text, "PRIVATE KEY");
        if (blocks.size() != 1) {
            throw new InvalidConfigurationException(
                    "Expected one private key, but found " + blocks.size());
        }
        PKCS8EncodedKeySpec spec = new PKCS8EncodedKeySpec(blocks.get(0));
        InvalidKeySpecException first = null;
        for (String algorithm : new String[] {"RSA", "EC", "DSA"}) {
            try {
                return KeyFactory.getInstance(algorithm).generatePrivate(spec);
            } catch (InvalidKeySpecException e) {
                if (first == null) {
                    first = e;
                }
            }
        }
        throw new InvalidConfigurationException("Private key could not be loaded", first);
    }

    private static KeyStore pemKeystore(String text) throws Exception {
        PrivateKey key = pemPrivateKey(text);
        Certificate[] chain = pemCertificates(text);
        KeyStore ks = KeyStore.getInstance("PKCS12");
        ks.load(null, null);
        ks.setKeyEntry("kafka", key, null, chain);
        return ks;
    }

    private static KeyStore pemTruststore(String text) throws Exception {
        Certificate[] certs = pemCertificates(text);
        KeyStore ts = KeyStore.getInstance("PKCS12");
        ts.load(null, null);
        for (int i = 0; i < certs.length; i++) {
            ts.setCertificateEntry("kafka" + i, certs[i]);
        }
        return ts;
    }

    // ---------------------------------------------------------------- serve

    private static int serve(String[] args) throws Exception {
        SSLContext initial;
        Path portFile;
        try {
            Map<String, String> opts = options(args);
            StoreSpec ks = StoreSpec.parse(required(opts, "--keystore"));
            StoreSpec ts = StoreSpec.parse(required(opts, "--truststore"));
            portFile = Path.of(required(opts, "--port-file"));
            noneLeft(opts);
            initial = context(ks, ts);
        } catch (UsageException e) {
            System.out.println("FAIL usage: " + e.getMessage());
            return 2;
        } catch (Throwable e) {
            System.out.println(("FAIL " + describe(e)).replaceAll("[\\r\\n]+", " "));
            return 1;
        }
        java.util.concurrent.atomic.AtomicReference<SSLContext> current =
                new java.util.concurrent.atomic.AtomicReference<>(initial);
        ServerSocket server =
                new ServerSocket(0, 50, InetAddress.getByName("127.0.0.1"));
        Thread acceptor = new Thread(() -> {
            while (true) {
                Socket plain;
                try {
                    plain = server.accept();
                } catch (IOException e) {
                    return;
                }
                SSLContext ctx = current.get();
                Thread t = new Thread(() -> serveOne(ctx, plain));
                t.setDaemon(true);
                t.start();
            }
        });
        acceptor.setDaemon(true);
        acceptor.start();
        Path tmp = portFile.resolveSibling(portFile.getFileName() + ".tmp");
        Files.writeString(tmp, Integer.toString(server.getLocalPort()), StandardCharsets.UTF_8);
        Files.move(tmp, portFile, StandardCopyOption.ATOMIC_MOVE);
        BufferedReader in =
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            String[] words = line.trim().split("\\s+");
            String result;
            try {
                if (words.length != 3 || !words[0].equals("reload")) {
                    throw new UsageException("expected reload KEYSTORE TRUSTSTORE, got " + line);
                }
                current.set(context(StoreSpec.parse(words[1]), StoreSpec.parse(words[2])));
                result = "OK reloaded";
            } catch (UsageException e) {
                result = "FAIL usage: " + e.getMessage();
            } catch (Throwable e) {
                result = "FAIL " + describe(e);
            }
            System.out.println(result.replaceAll("[\\r\\n]+", " "));
            System.out.flush();
        }
        server.close();
        return 0;
    }

    /** Wraps an accepted socket with the context current at accept time and handshakes. */
    private static void serveOne(SSLContext ctx, Socket plain) {
        try (SSLSocket s = (SSLSocket) ctx.getSocketFactory()
                .createSocket(plain, null, plain.getPort(), true)) {
            s.setUseClientMode(false);
            s.setWantClientAuth(true);
            s.setEnabledProtocols(new String[] {"TLSv1.3"});
            s.setSoTimeout(TIMEOUT_MS);
            s.startHandshake();
            // Wait for the client to close; the handshake is all that matters.
            s.getInputStream().read();
        } catch (Exception e) {
            // Clients that only read the certificate abort the handshake; that is expected.
        }
    }

    // ---------------------------------------------------------------- handshake

    private static SSLContext context(StoreSpec keystoreSpec, StoreSpec truststoreSpec)
            throws Exception {
        KeyStore ks = keystore(keystoreSpec);
        describeKeystore(ks);
        KeyManager[] km = keyManagers(ks, keystoreSpec);
        TrustManager[] tm = trustManagers(truststore(truststoreSpec));
        SSLContext ctx = SSLContext.getInstance("TLSv1.3");
        ctx.init(km, tm, null);
        return ctx;
    }

    private static String handshake(Map<String, String> opts) throws Exception {
        StoreSpec serverKs = StoreSpec.parse(required(opts, "--server-keystore"));
        StoreSpec serverTs = StoreSpec.parse(required(opts, "--server-truststore"));
        StoreSpec clientKs = StoreSpec.parse(required(opts, "--client-keystore"));
        StoreSpec clientTs = StoreSpec.parse(required(opts, "--client-truststore"));
        String host = opts.remove("--host");
        noneLeft(opts);
        if (host == null) {
            host = "127.0.0.1";
        }

        SSLContext serverCtx = labelled("server stores", () -> context(serverKs, serverTs));
        SSLContext clientCtx = labelled("client stores", () -> context(clientKs, clientTs));

        InetAddress loopback = InetAddress.getByName("127.0.0.1");
        try (SSLServerSocket server = (SSLServerSocket)
                serverCtx.getServerSocketFactory().createServerSocket(0, 1, loopback)) {
            server.setNeedClientAuth(true);
            server.setSoTimeout(TIMEOUT_MS);
            CompletableFuture<String> serverSide = CompletableFuture.supplyAsync(() -> {
                try (SSLSocket s = (SSLSocket) server.accept()) {
                    s.setSoTimeout(TIMEOUT_MS);
                    s.startHandshake();
                    if (s.getInputStream().read() != 'c') {
                        throw new IllegalStateException("server did not receive the client byte");
                    }
                    OutputStream out = s.getOutputStream();
                    out.write('s');
                    out.flush();
                    return s.getSession().getPeerPrincipal().getName();
                } catch (Exception e) {
                    throw new CompletionException(e);
                }
            });

            ClientResult client = null;
            Throwable clientError = null;
            try {
                client = client(clientCtx, host, server.getLocalPort());
            } catch (Exception e) {
                clientError = e;
            }

            String serverSaw = null;
            Throwable serverError = null;
            try {
                serverSaw = serverSide.get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
            } catch (ExecutionException e) {
                serverError = e.getCause();
            } catch (TimeoutException e) {
                serverError = e;
            }

            if (clientError == null && serverError == null) {
                return " " + client.protocol + " server-saw=" + serverSaw
                        + " client-saw=" + client.peer;
            }
            throw new HandshakeFailure(serverError, clientError);
        }
    }

    record ClientResult(String protocol, String peer) {}

    private static ClientResult client(SSLContext ctx, String host, int port) throws Exception {
        Socket plain = new Socket();
        plain.connect(new InetSocketAddress(InetAddress.getByName("127.0.0.1"), port), TIMEOUT_MS);
        try (SSLSocket s = (SSLSocket)
                ctx.getSocketFactory().createSocket(plain, host, port, true)) {
            s.setSoTimeout(TIMEOUT_MS);
            SSLParameters params = s.getSSLParameters();
            params.setEndpointIdentificationAlgorithm("HTTPS");
            s.setSSLParameters(params);
            s.startHandshake();
            OutputStream out = s.getOutputStream();
            out.write('c');
            out.flush();
            if (s.getInputStream().read() != 's') {
                throw new IllegalStateException("client did not receive the server byte");
            }
            return new ClientResult(
                    s.getSession().getProtocol(), s.getSession().getPeerPrincipal().getName());
        }
    }

    /** Both sides' failures; the one that did not merely receive an alert is reported first. */
    static final class HandshakeFailure extends Exception {
        private static final long serialVersionUID = 1L;

        HandshakeFailure(Throwable server, Throwable client) {
            super("handshake: " + message(server, client));
        }

        private static String message(Throwable server, Throwable client) {
            boolean serverFirst = server != null
                    && (client == null || isReceivedAlert(client) || !isReceivedAlert(server));
            List<String> parts = new ArrayList<>();
            if (serverFirst) {
                parts.add("server: " + describe(server));
                if (client != null) {
                    parts.add("client: " + describe(client));
                }
            } else {
                parts.add("client: " + describe(client));
                if (server != null) {
                    parts.add("server: " + describe(server));
                }
            }
            return String.join("; ", parts);
        }

        private static boolean isReceivedAlert(Throwable e) {
            String m = rootCause(e).getMessage();
            return m != null && m.startsWith("Received fatal alert");
        }
    }

    interface Step<T> {
        T run() throws Exception;
    }

    /** A failure whose message is already fully described, prefixed with what failed. */
    static final class Labelled extends Exception {
        private static final long serialVersionUID = 1L;

        Labelled(String label, Throwable cause) {
            super(label + ": " + describe(cause), cause);
        }
    }

    private static <T> T labelled(String label, Step<T> step) throws Exception {
        try {
            return step.run();
        } catch (Exception e) {
            throw new Labelled(label, e);
        }
    }

    // ---------------------------------------------------------------- pkix

    private static String pkix(Map<String, String> opts) throws Exception {
        Path chainFile = Path.of(required(opts, "--chain"));
        Path trustFile = Path.of(required(opts, "--trust"));
        noneLeft(opts);
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        List<Certificate> chain = new ArrayList<>(readCertificates(cf, chainFile));
        if (chain.isEmpty()) {
            throw new InvalidConfigurationException("no certificates in " + chainFile);
        }
        Set<TrustAnchor> anchors = new HashSet<>();
        for (Certificate c : readCertificates(cf, trustFile)) {
            anchors.add(new TrustAnchor((X509Certificate) c, null));
        }
        PKIXParameters params = new PKIXParameters(anchors);
        params.setRevocationEnabled(false);
        CertPathValidator.getInstance("PKIX").validate(cf.generateCertPath(chain), params);
        return "";
    }

    private static Collection<? extends Certificate> readCertificates(
            CertificateFactory cf, Path file) throws Exception {
        try (InputStream in = Files.newInputStream(file)) {
            return cf.generateCertificates(in);
        }
    }

    // ---------------------------------------------------------------- principal

    private static String principal(Map<String, String> opts) throws Exception {
        Path cert = Path.of(required(opts, "--cert"));
        String rulesFile = opts.remove("--rules-file");
        noneLeft(opts);
        X509Certificate c;
        try (InputStream in = Files.newInputStream(cert)) {
            c = (X509Certificate) CertificateFactory.getInstance("X.509").generateCertificate(in);
        }
        String name = c.getSubjectX500Principal().getName();
        String line = " name=" + hexUtf8(name);
        if (rulesFile != null) {
            String rules = Files.readString(Path.of(rulesFile), StandardCharsets.UTF_8);
            line += " mapped=" + hexUtf8(MappingRules.parse(rules).apply(name));
        }
        return line;
    }

    private static String hexUtf8(String s) {
        return HexFormat.of().formatHex(s.getBytes(StandardCharsets.UTF_8));
    }

    /**
     * ssl.principal.mapping.rules evaluated with java.util.regex as Kafka's
     * SslPrincipalMapper does (KIP-371, KAFKA-8860): the same splitting and rule
     * expressions, first whole-string match wins, then replaceAll with back-references to
     * missing groups made literal, then /L or /U. Kept independent of the Rust port so
     * each checks the other.
     */
    static final class MappingRules {
        private static final String RULE =
                "(DEFAULT)|RULE:((\\\\.|[^\\\\/])*)/((\\\\.|[^\\\\/])*)/([LU]?).*?|(.*?)";
        private static final Pattern SPLIT = Pattern.compile("\\s*(" + RULE + ")\\s*(,\\s*|$)");
        private static final Pattern PARSE = Pattern.compile(RULE);
        private static final Pattern BACK_REFERENCE = Pattern.compile("\\$(\\d+)");

        /** null pattern = DEFAULT. */
        private record Rule(Pattern pattern, String replacement, String caseFlag) {}

        private final List<Rule> rules = new ArrayList<>();

        static MappingRules parse(String text) {
            MappingRules m = new MappingRules();
            Matcher split = SPLIT.matcher(text.trim());
            while (split.find()) {
                String rule = split.group(1);
                Matcher p = PARSE.matcher(rule);
                if (!p.lookingAt() || p.end() != rule.length()) {
                    throw new IllegalArgumentException("Invalid rule: " + rule);
                }
                if (p.group(1) != null) {
                    m.rules.add(new Rule(null, null, ""));
                } else if (p.group(2) != null) {
                    m.rules.add(new Rule(Pattern.compile(p.group(2)), p.group(4), p.group(6)));
                }
            }
            return m;
        }

        String apply(String dn) {
            for (Rule r : rules) {
                if (r.pattern() == null) {
                    return dn;
                }
                if (!r.pattern().matcher(dn).matches()) {
                    continue;
                }
                String out = dn.replaceAll(r.pattern().pattern(),
                        literalMissingGroups(r.replacement(), r.pattern().matcher("").groupCount()));
                if (r.caseFlag().equals("L")) {
                    return out.toLowerCase(Locale.ENGLISH);
                }
                return r.caseFlag().equals("U") ? out.toUpperCase(Locale.ENGLISH) : out;
            }
            throw new IllegalStateException("no rule applies to " + dn);
        }

        /** A "$n" naming no group (after dropping digits while n >= 10) becomes "\$n". */
        private static String literalMissingGroups(String replacement, int groups) {
            if (groups == 0) {
                return replacement;
            }
            String value = replacement;
            Matcher refs = BACK_REFERENCE.matcher(replacement);
            while (refs.find()) {
                String digits = refs.group(1);
                if (digits.startsWith("0")) {
                    continue;
                }
                int n = Integer.parseInt(digits);
                while (n > groups && n >= 10) {
                    n /= 10;
                }
                if (n > groups) {
                    // Positions come from the unedited string, as in Kafka.
                    int at = refs.start(1) - 1;
                    value = value.substring(0, at) + "\\" + value.substring(at);
                }
            }
            return value;
        }
    }

    // ---------------------------------------------------------------- messages

    private static Throwable rootCause(Throwable e) {
        Throwable root = e;
        while (root.getCause() != null && root.getCause() != root) {
            root = root.getCause();
        }
        return root;
    }

    /**
     * "Class: message", plus the root cause unless the message already contains it, plus a
     * CertPathValidatorException's reason and failing chain index.
     */
    static String describe(Throwable e) {
        if (e instanceof Labelled || e instanceof HandshakeFailure) {
            return e.getMessage();
        }
        StringBuilder sb = new StringBuilder(one(e));
        Throwable root = rootCause(e);
        String message = String.valueOf(e.getMessage());
        if (root != e && !message.contains(String.valueOf(root.getMessage()))) {
            sb.append(" (root cause ").append(one(root)).append(")");
        }
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof CertPathValidatorException) {
                CertPathValidatorException cpve = (CertPathValidatorException) t;
                sb.append(" [reason ").append(cpve.getReason());
                if (cpve.getIndex() >= 0) {
                    sb.append(" at chain index ").append(cpve.getIndex());
                }
                sb.append("]");
                break;
            }
            if (t.getCause() == t) {
                break;
            }
        }
        return sb.toString();
    }

    private static String one(Throwable e) {
        return e.getClass().getSimpleName() + ": " + e.getMessage();
    }
}
