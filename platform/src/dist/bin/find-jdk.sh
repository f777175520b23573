# Sourced by ./build and the bin/ launchers: sets JAVA_HOME to a JDK of release 21 or newer.
# JAVA_HOME wins if it qualifies; otherwise the newest JDK under /usr/lib/jvm.

bj_jdk_release() { # prints the feature release of the JDK in $1, or nothing
  local release_file="$1/release" v=""
  [ -x "$1/bin/java" ] || return 0
  if [ -r "$release_file" ]; then
    v=$(sed -n 's/^JAVA_VERSION="\([^"]*\)".*/\1/p' "$release_file")
  fi
  if [ -z "$v" ]; then
    v=$("$1/bin/java" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)
  fi
  v=${v#1.}
  printf '%s\n' "${v%%[.+-]*}"
}

bj_find_jdk() {
  local min=21 best="" best_release=0 dir release
  if [ -n "${JAVA_HOME:-}" ]; then
    release=$(bj_jdk_release "$JAVA_HOME")
    if [ -n "$release" ] && [ "$release" -ge "$min" ]; then
      return 0
    fi
  fi
  for dir in /usr/lib/jvm/*; do
    [ -d "$dir" ] || continue
    [ -x "$dir/bin/javac" ] || [ -x "$dir/bin/java" ] || continue
    release=$(bj_jdk_release "$dir")
    [ -n "$release" ] || continue
    if [ "$release" -ge "$min" ] && [ "$release" -gt "$best_release" ]; then
      best="$dir"; best_release="$release"
    fi
  done
  if [ -z "$best" ]; then
    echo "blockjobs needs a JDK of release $min or newer: none in JAVA_HOME${JAVA_HOME:+ ($JAVA_HOME)} or under /usr/lib/jvm." >&2
    echo "Install one (for example: apt-get install openjdk-21-jdk-headless) or set JAVA_HOME to it." >&2
    return 1
  fi
  export JAVA_HOME="$best"
}

# The key of an ahead-of-time class cache: the JDK, and the name, size and time of every jar in
# the folder $1. The JVM would load a cache's stale classes after a jar is rebuilt, so the
# launcher uses the cache only while this key is the one recorded when it was trained.
bj_aot_key() {
  { printf '%s\n' "$JAVA_HOME"; (cd "$1" && ls -l --time-style=+%s -- *.jar) | awk '{print $5, $6, $7}'; } | cksum
}
