# Sourced (bash only) by launch.sh, scripts/demo.sh, scripts/pipeline.sh and scripts/moe_acceptance.sh.
# swift_build ARGS…: `swift build ARGS…` in one normalised environment. SwiftPM recompiles whole modules (here
# Hummingbird's, ~45 s) whenever the environment of the build differs from the last one — one extra variable, or a
# different SHLVL between a script and a shell — so launch.sh, demo.sh and pipeline.sh build with only the variables
# below (the toolchain's and compiler's search paths, proxies and certificates for fetching packages kept), and two launches from different shells reuse the build.
swift_build() {
  local keep=() v
  for v in PATH HOME USER LOGNAME TMPDIR LANG LC_ALL CC CXX CFLAGS CPPFLAGS CXXFLAGS LDFLAGS CPATH C_INCLUDE_PATH \
           CPLUS_INCLUDE_PATH LIBRARY_PATH LD_LIBRARY_PATH PKG_CONFIG_PATH SDKROOT TOOLCHAINS SSL_CERT_FILE SSL_CERT_DIR \
           http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY \
           $(compgen -e | grep -E '^(SWIFT|SWIFTPM|XDG|GIT)_' || true); do
    [ -n "${!v+x}" ] && keep+=("$v=${!v}")
  done
  env -i "${keep[@]}" swift build "$@"
}
