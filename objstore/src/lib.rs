//! Object storage for Strata: Thanos's objstore YAML mapped onto the `object_store` crate.
