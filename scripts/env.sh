# Sourced by the scripts: one shared build cache, outside the checkout, so the ~10 minute
# RocksDB build happens once per machine rather than once per clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/dynakv/target}"
