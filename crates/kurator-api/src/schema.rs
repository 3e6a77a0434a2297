//! Schema fragments that schemars cannot express on its own.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Free-form JSON object kept as written (Helm values, Flux fields we pass through).
pub fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Optional list of free-form objects (Flux patches, images, valuesFrom ...).
pub fn free_form_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 256,
        "items": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

/// Go `metav1.Duration` string as Flux validates it, e.g. `5m`, `1h30m`, `500ms`.
pub fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$",
        "maxLength": 64,
    })
}
