package io.blockjobs.platform.cli;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.image.BackupStore;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.ParentCommand;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ArrayNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * {@code blockjobs backups [DIR]}: the chains and points in time that {@code backup-policy.js}
 * keeps in a backup store, from its manifests, each chain checked against the files there
 * (present, sealed, of the recorded size). Asks the daemon for its store, or reads {@code DIR}
 * directly when given (no daemon needed).
 */
@Command(name = "backups", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Lists the backups in the backup store: per disk, its chains and their points in time",
                "(id, time, mode, file, size) and whether each chain is complete.",
                "Without DIR it asks the daemon (x-backup-store-list); with DIR it reads that folder itself.",
                "Exit status 0; 1 if a chain is incomplete; 2 if the store cannot be read."})
final class BackupsCommand implements Callable<Integer> {

    @ParentCommand
    BlockjobsClient client;

    @Parameters(arity = "0..1", paramLabel = "DIR", description = "a backup store folder to read directly")
    Path dir;

    /** What the listing needs of a store: its files, and the text of a manifest. */
    private interface Source {
        List<JsonNode> files() throws IOException;

        String read(String name) throws IOException;
    }

    @Override
    public Integer call() throws Exception {
        if (dir != null) {
            if (!Files.isDirectory(dir)) {
                throw new BlockjobsClient.ClientError(dir + " is not a folder", 2);
            }
            BackupStore store = new BackupStore(dir);
            return show(new Source() {
                public List<JsonNode> files() throws IOException {
                    List<JsonNode> out = new ArrayList<>();
                    for (BackupStore.Entry e : store.list()) {
                        out.add(Json.MAPPER.valueToTree(e));
                    }
                    return out;
                }

                public String read(String name) throws IOException {
                    return store.read(name);
                }
            });
        }
        try (QmpConnection qmp = client.connect()) {
            try {
                return show(new Source() {
                    public List<JsonNode> files() throws IOException {
                        List<JsonNode> out = new ArrayList<>();
                        qmp.execute("x-backup-store-list", null).path("files").forEach(out::add);
                        return out;
                    }

                    public String read(String name) throws IOException {
                        return qmp.execute("x-backup-store-read", Json.object().put("name", name)).path("data").asString();
                    }
                });
            } catch (QmpConnection.QmpError e) {
                return client.qmpError(e);
            }
        }
    }

    private int show(Source source) throws IOException {
        List<JsonNode> files = source.files();
        Map<String, JsonNode> byName = new HashMap<>();
        files.forEach(f -> byName.put(f.path("name").asString(), f));
        ArrayNode chains = Json.MAPPER.createArrayNode();
        boolean allComplete = true;
        for (JsonNode f : files) {
            String name = f.path("name").asString();
            if (!f.path("type").asString().equals("manifest") || !name.endsWith("/manifest.json")) {
                continue;
            }
            JsonNode m;
            try {
                m = Json.MAPPER.readTree(source.read(name));
            } catch (RuntimeException e) {
                System.err.println("blockjobs: " + name + " is not a manifest: " + e.getMessage());
                allComplete = false;
                continue;
            }
            ObjectNode chain = chains.addObject();
            chain.put("disk", m.path("disk").asString()).put("chain", m.path("chain").asString());
            ArrayNode points = chain.putArray("backups");
            List<String> problems = new ArrayList<>();
            for (JsonNode b : m.path("backups")) {
                JsonNode file = byName.get(b.path("file").asString());
                String problem = file == null ? "missing" : file.path("partial").asBoolean() ? "partial"
                        : file.path("size").asLong() != b.path("size").asLong() ? "size differs from the manifest" : null;
                if (problem != null) {
                    problems.add(b.path("file").asString() + ": " + problem);
                }
                points.addObject().put("id", b.path("id").asString()).put("time", b.path("time").asString())
                        .put("mode", b.path("mode").asString()).put("file", b.path("file").asString())
                        .put("size", b.path("size").asLong()).put("ok", problem == null);
            }
            chain.put("complete", problems.isEmpty());
            if (!problems.isEmpty()) {
                chain.put("problem", String.join("; ", problems));
                allComplete = false;
            }
        }
        PrintStream out = System.out;
        if (client.json) {
            out.println(chains);
        } else if (chains.isEmpty()) {
            out.println("no backups");
        } else {
            out.println(table(chains));
        }
        out.flush();
        return allComplete ? 0 : 1;
    }

    /** One line per point in time, grouped by disk and chain. */
    static String table(ArrayNode chains) {
        List<String[]> rows = new ArrayList<>();
        rows.add(new String[] {"DISK", "CHAIN", "ID", "TIME", "MODE", "SIZE", "FILE", "CHAIN OK"});
        for (JsonNode c : chains) {
            for (JsonNode b : c.path("backups")) {
                rows.add(new String[] {c.path("disk").asString(), c.path("chain").asString(), b.path("id").asString(),
                        b.path("time").asString(), b.path("mode").asString(), Terminal.bytes(b.path("size").asLong()),
                        b.path("file").asString() + (b.path("ok").asBoolean() ? "" : " (!)"),
                        c.path("complete").asBoolean() ? "yes" : "no: " + c.path("problem").asString()});
            }
        }
        return Terminal.columns(rows);
    }

}
