# Sourced by the stand-in image builders (scripts/build_service_image.sh,
# scripts/build_compose_images.sh): a content key for what an image is made from, and whether the
# images built for that key are still there. A builder hashes its inputs (its own text, the
# versions of what it copies), rebuilds only when the key changed or an image went missing, and
# records the key after a build.
#
#   key=$( { inputs...; } | cache_key )
#   cache_fresh "$OUT" "$key" IMAGE... || { build...; cache_store "$OUT" "$key"; }

cache_key() { sha256sum | cut -c1-16; }

cache_fresh() {
  local dir=$1 key=$2 image
  shift 2
  [ -f "$dir/key" ] && [ "$(cat "$dir/key")" = "$key" ] || return 1
  for image in "$@"; do podman image exists "$image" || return 1; done
}

cache_store() { mkdir -p "$1" && echo "$2" > "$1/key"; }
