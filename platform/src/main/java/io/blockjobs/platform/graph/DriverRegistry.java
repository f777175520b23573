package io.blockjobs.platform.graph;

import io.blockjobs.sdk.driver.BlockDriver;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The block drivers {@code blockdev-add} can open, by name: the built-in ones and those plugins
 * contribute. Job filters ({@code commit_top}, {@code mirror_top}) are opened by jobs only and
 * are not listed for users.
 */
public final class DriverRegistry {
    private final Map<String, BlockDriver> drivers = new ConcurrentHashMap<>();
    private final Map<String, String> owners = new ConcurrentHashMap<>();

    /**
     * Registers a driver.
     *
     * @param owner who contributed it ({@code built-in} or a plugin id), for messages
     * @throws IllegalStateException if a driver of that name exists
     */
    public void register(BlockDriver driver, String owner) {
        if (drivers.putIfAbsent(driver.name(), driver) != null) {
            throw new IllegalStateException("block driver '" + driver.name() + "' is already registered by "
                    + owners.get(driver.name()));
        }
        owners.put(driver.name(), owner);
    }

    /** Removes a driver (its plugin is going); nodes already open keep working until deleted. */
    public void unregister(String name) {
        drivers.remove(name);
        owners.remove(name);
    }

    /** The driver of this name, or null. */
    public BlockDriver get(String name) {
        return drivers.get(name);
    }

    /** Who registered the driver, or null. */
    public String owner(String name) {
        return owners.get(name);
    }

    /** Every registered name, sorted: the values of {@code BlockdevDriver}. */
    public List<String> names() {
        return new ArrayList<>(new TreeMap<>(drivers).keySet());
    }
}
