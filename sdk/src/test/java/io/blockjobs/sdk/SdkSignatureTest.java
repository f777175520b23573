package io.blockjobs.sdk;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.fail;

import io.blockjobs.sdk.plugin.Sdk;
import java.io.IOException;
import java.lang.reflect.Constructor;
import java.lang.reflect.Field;
import java.lang.reflect.Member;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.Type;
import java.lang.reflect.TypeVariable;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * The SDK's public signatures against the checked-in baseline
 * ({@code src/test/resources/sdk-signatures.txt}), so that an accidental break of the plugin API
 * fails the build.
 *
 * <p>Every public type of the {@code io.blockjobs.sdk} packages (not the test kit) and every
 * public or protected constructor, method and field is one line. Lines the baseline lacks are
 * additions and pass: the SDK's minor version grows with them. A baseline line the SDK no longer
 * has is a removal or a change and fails, listing what went and what came.
 *
 * <p>Regenerate the baseline with
 * {@code ./build mvn -q -pl sdk test -Dtest=SdkSignatureTest -Dsdk.signatures.update=true}. That
 * refuses to record a removal or change unless {@link Sdk#VERSION}'s major is above the
 * baseline's (a deliberate break), or the value is {@code compatible} (a change that breaks no
 * plugin, such as an abstract method given a default).
 */
class SdkSignatureTest {
    private static final String SDK_PACKAGE = "io.blockjobs.sdk";
    private static final String TEST_KIT = "io.blockjobs.sdk.testkit";
    private static final String BASELINE = "src/test/resources/sdk-signatures.txt";
    private static final String UPDATE = "sdk.signatures.update";
    private static final String VERSION_HEADER = "# sdk.version=";
    private static final String REGENERATE =
            "./build mvn -q -pl sdk test -Dtest=SdkSignatureTest -Dsdk.signatures.update=true";

    @Test
    void publicSignaturesKeepEveryLineOfTheBaseline() throws Exception {
        List<String> current = render(sdkTypes());
        Path baselineFile = baselineFile();
        List<String> baselineText = Files.exists(baselineFile)
                ? Files.readAllLines(baselineFile, StandardCharsets.UTF_8) : List.of();
        String baselineVersion = baselineText.stream().filter(l -> l.startsWith(VERSION_HEADER))
                .map(l -> l.substring(VERSION_HEADER.length()).trim()).findFirst().orElse("0.0.0");
        Set<String> baseline = baselineText.stream().filter(l -> !l.isBlank() && !l.startsWith("#"))
                .collect(Collectors.toCollection(LinkedHashSet::new));

        Set<String> now = new LinkedHashSet<>(current);
        List<String> removed = baseline.stream().filter(l -> !now.contains(l)).toList();
        List<String> added = current.stream().filter(l -> !baseline.contains(l)).toList();

        String update = System.getProperty(UPDATE, "");
        if (!update.isEmpty() && !update.equals("false")) {
            if (!removed.isEmpty() && major(Sdk.VERSION) <= major(baselineVersion) && !update.equals("compatible")) {
                fail("Not recording the baseline: " + removed.size() + " signature(s) of SDK " + baselineVersion
                        + " were removed or changed, but Sdk.VERSION is still " + Sdk.VERSION + ".\n"
                        + "Bump its major for a deliberate break, or pass -D" + UPDATE + "=compatible if no plugin"
                        + " can notice.\n" + list("removed or changed", removed) + list("added", added));
            }
            write(baselineFile, current);
            System.out.println("Wrote " + baselineFile + " for SDK " + Sdk.VERSION + ": " + current.size()
                    + " signatures (" + added.size() + " added, " + removed.size() + " removed or changed)");
            return;
        }

        assertThat(baselineText).as("the baseline %s; create it with %s", baselineFile, REGENERATE).isNotEmpty();
        if (!removed.isEmpty()) {
            fail("The SDK's public signatures lost " + removed.size() + " line(s) of the baseline (" + BASELINE
                    + ", SDK " + baselineVersion + "): a plugin built against it may no longer load or link.\n"
                    + list("removed or changed", removed) + list("added (perhaps the changed form)", added)
                    + "If this is not meant, restore the signature; to grow the SDK, add beside it (a new method"
                    + " with a default body, a new overload, a new type).\n"
                    + "If it is a deliberate break: bump the major of Sdk.VERSION (now " + Sdk.VERSION + ") and"
                    + " regenerate the baseline with\n    " + REGENERATE + "\n"
                    + "If no plugin can notice (an abstract method given a default, a final class opened),"
                    + " regenerate it with -D" + UPDATE + "=compatible instead.");
        }
        if (!added.isEmpty()) {
            // Additions pass. A new abstract method in a type that existed breaks plugins implementing it.
            Set<String> oldTypes = baseline.stream().map(SdkSignatureTest::typeOf).collect(Collectors.toSet());
            List<String> newAbstract = added.stream()
                    .filter(l -> oldTypes.contains(typeOf(l)) && l.contains(" abstract ") && l.contains("("))
                    .toList();
            System.out.println("SDK " + Sdk.VERSION + " adds " + added.size() + " signature(s) to the baseline of"
                    + " SDK " + baselineVersion + " (allowed; record them with " + REGENERATE + ")\n"
                    + list("added", added)
                    + (newAbstract.isEmpty() ? "" : list("abstract methods added to existing types: a plugin that"
                    + " implements the type no longer compiles, and an old one throws AbstractMethodError when"
                    + " called (fine for types only the platform implements, such as JobSetup; otherwise give"
                    + " them a default body)", newAbstract)));
        }
    }

    /** The type a line describes: the text before the first ": ". */
    private static String typeOf(String line) {
        return line.substring(0, line.indexOf(": "));
    }

    private static int major(String version) {
        return Integer.parseInt(version.split("\\.")[0]);
    }

    private static String list(String title, List<String> lines) {
        if (lines.isEmpty()) {
            return "";
        }
        return lines.stream().map(l -> "  " + l).collect(Collectors.joining("\n", title + ":\n", "\n"));
    }

    private static Path baselineFile() {
        String basedir = System.getProperty("basedir", System.getProperty("user.dir"));
        return Path.of(basedir).resolve(BASELINE);
    }

    private static void write(Path file, List<String> lines) throws IOException {
        List<String> text = new ArrayList<>();
        text.add("# The SDK's public signatures, one a line; checked by SdkSignatureTest. Do not edit by hand:");
        text.add("#   " + REGENERATE);
        text.add(VERSION_HEADER + Sdk.VERSION);
        text.addAll(lines);
        Files.createDirectories(file.getParent());
        Files.write(file, text, StandardCharsets.UTF_8);
    }

    /** The SDK's public types, read from the folder or jar its classes were loaded from. */
    private static List<Class<?>> sdkTypes() throws IOException, URISyntaxException, ClassNotFoundException {
        Path root = Path.of(Sdk.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        List<String> names = new ArrayList<>();
        if (Files.isDirectory(root)) {
            try (Stream<Path> files = Files.walk(root)) {
                files.map(root::relativize).map(Path::toString).forEach(names::add);
            }
        } else {
            try (java.util.zip.ZipFile jar = new java.util.zip.ZipFile(root.toFile())) {
                jar.stream().map(java.util.zip.ZipEntry::getName).forEach(names::add);
            }
        }
        List<Class<?>> types = new ArrayList<>();
        for (String file : names) {
            String path = file.replace('\\', '/');
            if (!path.endsWith(".class") || path.endsWith("module-info.class") || path.endsWith("package-info.class")) {
                continue;
            }
            String name = path.substring(0, path.length() - ".class".length()).replace('/', '.');
            if (!name.startsWith(SDK_PACKAGE + ".") || name.startsWith(TEST_KIT + ".")) {
                continue;
            }
            Class<?> c = Class.forName(name, false, Sdk.class.getClassLoader());
            if (visible(c)) {
                types.add(c);
            }
        }
        types.sort(Comparator.comparing(Class::getName));
        assertThat(types).as("SDK types found under %s", root).isNotEmpty();
        return types;
    }

    /** Public, or a protected or public member of such a type, all the way out. */
    private static boolean visible(Class<?> c) {
        if (c.isSynthetic() || c.isAnonymousClass() || c.isLocalClass()) {
            return false;
        }
        for (Class<?> t = c; t != null; t = t.getDeclaringClass()) {
            int m = t.getModifiers();
            if (!Modifier.isPublic(m) && !(t.isMemberClass() && Modifier.isProtected(m))) {
                return false;
            }
        }
        return true;
    }

    private static boolean visible(Member m) {
        return !m.isSynthetic() && (Modifier.isPublic(m.getModifiers()) || Modifier.isProtected(m.getModifiers()));
    }

    /** One line per type and per visible member, types in name order, each type's line first. */
    static List<String> render(List<Class<?>> types) {
        List<String> out = new ArrayList<>();
        for (Class<?> c : types) {
            String prefix = c.getName() + ": ";
            out.add(prefix + declaration(c));
            List<String> members = new ArrayList<>();
            for (Field f : c.getDeclaredFields()) {
                if (visible(f)) {
                    members.add(f.toGenericString().replace(c.getTypeName() + "." + f.getName(), f.getName()));
                }
            }
            for (Constructor<?> k : c.getDeclaredConstructors()) {
                if (visible(k)) {
                    members.add(k.toGenericString().replace(c.getTypeName() + "(", c.getSimpleName() + "("));
                }
            }
            for (Method m : c.getDeclaredMethods()) {
                if (visible(m) && !m.isBridge() && !(c.isRecord() && isObjectMethod(m))) {
                    members.add(m.toGenericString().replace(c.getTypeName() + "." + m.getName() + "(", m.getName() + "("));
                }
            }
            members.stream().sorted().forEach(s -> out.add(prefix + s));
        }
        return out;
    }

    /** A record's equals, hashCode and toString: always there, whether written or generated. */
    private static boolean isObjectMethod(Method m) {
        return switch (m.getName()) {
            case "equals" -> Arrays.equals(m.getParameterTypes(), new Class<?>[] {Object.class});
            case "hashCode", "toString" -> m.getParameterCount() == 0;
            default -> false;
        };
    }

    private static String declaration(Class<?> c) {
        int mods = c.getModifiers() & (Modifier.PUBLIC | Modifier.PROTECTED | Modifier.STATIC | Modifier.FINAL
                | Modifier.ABSTRACT);
        String kind;
        if (c.isAnnotation()) {
            kind = "@interface";
            mods &= ~(Modifier.ABSTRACT | Modifier.STATIC);
        } else if (c.isInterface()) {
            kind = "interface";
            mods &= ~(Modifier.ABSTRACT | Modifier.STATIC);
        } else if (c.isEnum()) {
            kind = "enum";
            mods &= ~(Modifier.FINAL | Modifier.STATIC | Modifier.ABSTRACT); // constant bodies change these
        } else if (c.isRecord()) {
            kind = "record";
            mods &= ~(Modifier.FINAL | Modifier.STATIC);
        } else {
            kind = "class";
        }
        StringBuilder s = new StringBuilder();
        String modifiers = Modifier.toString(mods);
        if (!modifiers.isEmpty()) {
            s.append(modifiers).append(' ');
        }
        if (c.isSealed()) {
            s.append("sealed ");
        }
        s.append(kind).append(' ').append(c.getSimpleName()).append(typeParameters(c.getTypeParameters()));
        if (!c.isInterface() && !c.isEnum() && !c.isRecord() && c.getSuperclass() != Object.class) {
            s.append(" extends ").append(c.getGenericSuperclass().getTypeName());
        }
        Type[] interfaces = c.getGenericInterfaces();
        if (c.isAnnotation()) {
            interfaces = new Type[0];
        }
        if (interfaces.length > 0) {
            s.append(c.isInterface() ? " extends " : " implements ")
                    .append(Arrays.stream(interfaces).map(Type::getTypeName).collect(Collectors.joining(", ")));
        }
        if (c.isSealed()) {
            s.append(" permits ").append(Arrays.stream(c.getPermittedSubclasses()).map(Class::getName)
                    .sorted().collect(Collectors.joining(", ")));
        }
        if (c.isRecord()) {
            s.append('(').append(Arrays.stream(c.getRecordComponents())
                    .map(r -> r.getGenericType().getTypeName() + " " + r.getName())
                    .collect(Collectors.joining(", "))).append(')');
        }
        return s.toString();
    }

    private static String typeParameters(TypeVariable<?>[] variables) {
        if (variables.length == 0) {
            return "";
        }
        return Arrays.stream(variables).map(v -> {
            List<String> bounds = Arrays.stream(v.getBounds()).filter(b -> b != Object.class)
                    .map(Type::getTypeName).toList();
            return bounds.isEmpty() ? v.getName() : v.getName() + " extends " + String.join(" & ", bounds);
        }).collect(Collectors.joining(", ", "<", ">"));
    }
}
