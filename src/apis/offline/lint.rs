//! Warnings about input `keyhook convert` carries over but that will not
//! work: fields keyhook's schema does not know (typos, mostly), and
//! templates calling helpers engine `v2` removed.

use serde_json::Value;

use crate::apis::crds::{CrdError, crds};
use crate::apis::{Kind, Version, convert_object, removed_helpers};

/// Every provider block upstream's stores have had in any version. keyhook
/// models a few of them; the rest it carries over opaquely, so they are not
/// unknown fields.
const UPSTREAM_PROVIDERS: [&str; 45] = [
    "akeyless",
    "alibaba",
    "aws",
    "azurekv",
    "barbican",
    "beyondtrust",
    "beyondtrustworkloadcredentials",
    "bitwardensecretsmanager",
    "chef",
    "cloudrusm",
    "conjur",
    "crd",
    "delinea",
    "device42",
    "doppler",
    "dvls",
    "fake",
    "fortanix",
    "gcpsm",
    "github",
    "gitlab",
    "ibm",
    "infisical",
    "keepersecurity",
    "kubernetes",
    "nebiusmysterybox",
    "ngrok",
    "onboardbase",
    "onepassword",
    "onepasswordSDK",
    "openBao",
    "oracle",
    "ovh",
    "passbolt",
    "passworddepot",
    "previder",
    "pulumi",
    "scaleway",
    "secretserver",
    "senhasegura",
    "vault",
    "volcengine",
    "webhook",
    "yandexcertificatemanager",
    "yandexlockbox",
];

/// Fields every object has beside the schema's own properties.
const OBJECT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// The `openAPIV3Schema` of every kind and version keyhook serves.
pub(crate) struct Schemas(Vec<(Kind, Version, Value)>);

impl Schemas {
    /// Reads the schemas from keyhook's CRDs.
    pub(crate) fn load() -> Result<Self, CrdError> {
        let mut schemas = Vec::new();
        for crd in crds()? {
            let Some(kind) = Kind::from_name(&crd.spec.names.kind) else {
                continue;
            };
            for version in &crd.spec.versions {
                let schema = version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .map(serde_json::to_value)
                    .transpose()
                    .map_err(|source| CrdError::Json {
                        kind: kind.as_str(),
                        source,
                    })?;
                let served = Version::ALL
                    .into_iter()
                    .find(|v| v.as_str() == version.name);
                if let (Some(schema), Some(served)) = (schema, served) {
                    schemas.push((kind, served, schema));
                }
            }
        }
        Ok(Self(schemas))
    }

    /// Paths of the fields of `object` that keyhook's schema for its kind and
    /// version does not have, such as `spec.target.tempalte`.
    pub(crate) fn unknown_fields(
        &self,
        kind: Kind,
        version: Version,
        object: &Value,
    ) -> Vec<String> {
        let Some((_, _, schema)) = self.0.iter().find(|(k, v, _)| *k == kind && *v == version)
        else {
            return Vec::new();
        };
        let mut found = Vec::new();
        if let (Value::Object(fields), Some(Value::Object(known))) =
            (object, schema.get("properties"))
        {
            for (name, value) in fields {
                match known.get(name) {
                    Some(child) => walk(value, child, name, &mut found),
                    None if OBJECT_FIELDS.contains(&name.as_str()) => {}
                    None => found.push(name.clone()),
                }
            }
        }
        found
    }
}

fn walk(value: &Value, schema: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            if let Some(Value::Object(known)) = schema.get("properties") {
                for (name, child) in fields {
                    let field = format!("{path}.{name}");
                    match known.get(name) {
                        Some(child_schema) => walk(child, child_schema, &field, found),
                        None if path == "spec.provider"
                            && UPSTREAM_PROVIDERS.contains(&name.as_str()) => {}
                        None => found.push(field),
                    }
                }
            } else if let Some(child_schema @ Value::Object(_)) = schema.get("additionalProperties")
            {
                for (name, child) in fields {
                    walk(child, child_schema, &format!("{path}[{name}]"), found);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item, item_schema, &format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

/// Uses of removed template helpers in an ExternalSecret of any version, as
/// `(field, helper)`; fields are named as in `v1`, the version the helpers'
/// engine belongs to.
pub(crate) fn removed_helper_uses(object: &Value) -> Vec<(String, &'static str)> {
    convert_object(object.clone(), Version::V1)
        .map(|hub| removed_helpers(&hub))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typos_are_found_where_keyhook_knows_the_shape() {
        let schemas = Schemas::load().unwrap();
        let object = json!({
            "apiVersion": "external-secrets.io/v1beta1",
            "kind": "SecretStore",
            "metadata": {"name": "s", "annotations": {"anything": "goes"}},
            "spec": {
                "provider": {"vault": {"server": "https://v", "pth": "secret"}, "gcpsm": {"projectID": "p"}},
                "retrySettings": {"maxRetries": 3}
            },
            "extra": true
        });
        assert_eq!(
            schemas.unknown_fields(Kind::SecretStore, Version::V1Beta1, &object),
            ["extra", "spec.provider.vault.pth"]
        );
    }
}
