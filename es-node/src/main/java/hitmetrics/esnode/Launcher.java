package hitmetrics.esnode;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;

import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.PluginsLoader;

/**
 * Starts one Elasticsearch node in this JVM from a home laid out like the distribution.
 *
 * Usage: Launcher -E path.home=... -E path.data=... [-E key=value ...]
 * The server jars must be on the module path (PluginsLoader needs the server as a named module).
 * SIGTERM closes the node cleanly, so its data survives a stop and start.
 */
public final class Launcher {
    private Launcher() {}

    public static void main(String[] args) throws Exception {
        Settings.Builder builder = Settings.builder()
            .put("network.host", "127.0.0.1")
            .put("discovery.type", "single-node")
            .put("node.name", "hitmetrics-local")
            .put("cluster.name", "hitmetrics-local");
        for (int i = 0; i < args.length; i++) {
            if (!"-E".equals(args[i]) || i + 1 == args.length || !args[i + 1].contains("=")) {
                throw new IllegalArgumentException("expected -E key=value, got: " + args[i]);
            }
            String[] kv = args[++i].split("=", 2);
            builder.put(kv[0], kv[1]);
        }
        Settings settings = builder.build();
        Path home = Path.of(settings.get("path.home"));
        Path config = home.resolve("config");
        Files.createDirectories(config);

        LogConfigurator.configureESLogging();
        LogConfigurator.configureWithoutConfig(settings);
        Environment env = new Environment(settings, config);
        PluginsLoader loader = PluginsLoader.createPluginsLoader(
            PluginsLoader.loadModulesBundles(env.modulesDir()), Set.of(), Map.of());

        Node node = new Node(env, loader);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(30, java.util.concurrent.TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "hitmetrics-node-shutdown"));
        node.start();
        stopped.await();
    }
}
