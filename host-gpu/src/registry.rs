//! The operator's model registry: which models this node serves, and to
//! which tenants.
//!
//! Loaded once and shared by every tenant (one copy of each model's weights).
//! The registry is the operator's side of access control; the tenant's own
//! grants (the allowlist in each invocation) are checked by the runtime before
//! it gets here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use crate::{InferenceError, ModelDescriptor, ModelService, ModelStatus};

/// Which tenants may use a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    All,
    Only(BTreeSet<String>),
}

impl TenantScope {
    pub fn admits(&self, tenant: &str) -> bool {
        match self {
            TenantScope::All => true,
            TenantScope::Only(tenants) => tenants.contains(tenant),
        }
    }
}

struct Entry {
    scope: TenantScope,
    service: Arc<dyn ModelService>,
}

/// Named models and who may use them.
#[derive(Default)]
pub struct ModelRegistry {
    models: BTreeMap<String, Entry>,
}

impl fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelRegistry")
            .field("models", &self.models.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ModelRegistry {
    /// A registry with no models: every lookup is `NotFound`.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds a model under its descriptor's name.
    pub fn register(
        &mut self,
        service: Arc<dyn ModelService>,
        scope: TenantScope,
    ) -> Result<(), InferenceError> {
        let name = service.descriptor().name.clone();
        if self.models.contains_key(&name) {
            return Err(InferenceError::InvalidInput(format!(
                "model `{name}` is registered twice"
            )));
        }
        self.models.insert(name, Entry { scope, service });
        Ok(())
    }

    /// The model `name` for `tenant`. A model the tenant may not use is
    /// `AccessDenied`, so that a tenant can tell "not for you" from "not here".
    pub fn lookup(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Arc<dyn ModelService>, InferenceError> {
        let entry = self
            .models
            .get(name)
            .ok_or_else(|| InferenceError::NotFound {
                model: name.to_owned(),
            })?;
        if !entry.scope.admits(tenant) {
            return Err(InferenceError::AccessDenied {
                model: name.to_owned(),
            });
        }
        Ok(Arc::clone(&entry.service))
    }

    /// Descriptors of the models `tenant` may use, by name.
    pub fn models_for_tenant(&self, tenant: &str) -> Vec<ModelDescriptor> {
        self.models
            .values()
            .filter(|entry| entry.scope.admits(tenant))
            .map(|entry| entry.service.descriptor().clone())
            .collect()
    }

    /// Descriptors of every registered model, by name (for the operator).
    pub fn all_models(&self) -> Vec<ModelDescriptor> {
        self.models
            .values()
            .map(|entry| entry.service.descriptor().clone())
            .collect()
    }

    /// Every registered model's status, by name (for the operator).
    pub fn statuses(&self) -> Vec<(String, ModelStatus)> {
        self.models
            .iter()
            .map(|(name, entry)| (name.clone(), entry.service.status()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelKind, RequestContext};

    #[derive(Debug)]
    struct Fixed(ModelDescriptor);

    impl ModelService for Fixed {
        fn descriptor(&self) -> &ModelDescriptor {
            &self.0
        }
    }

    fn model(name: &str) -> Arc<dyn ModelService> {
        Arc::new(Fixed(ModelDescriptor::new(
            name,
            ModelKind::Embedding,
            512,
            384,
        )))
    }

    #[test]
    fn scope_limits_lookup_and_listing() {
        let mut registry = ModelRegistry::empty();
        registry.register(model("open"), TenantScope::All).unwrap();
        registry
            .register(
                model("private"),
                TenantScope::Only(["acme".to_owned()].into()),
            )
            .unwrap();

        assert!(registry.lookup("globex", "open").is_ok());
        assert!(registry.lookup("acme", "private").is_ok());
        assert_eq!(
            registry.lookup("globex", "private").unwrap_err(),
            InferenceError::AccessDenied {
                model: "private".into()
            }
        );
        let names: Vec<_> = registry
            .models_for_tenant("globex")
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["open"]);
    }

    #[test]
    fn duplicate_names_are_refused() {
        let mut registry = ModelRegistry::empty();
        registry.register(model("m"), TenantScope::All).unwrap();
        assert!(registry.register(model("m"), TenantScope::All).is_err());
    }

    #[test]
    fn unsupported_operations_name_the_model() {
        let service = model("m");
        let context = RequestContext {
            tenant: "t".into(),
            deadline: None,
        };
        let err = service.embed(&context, vec!["x".into()]).unwrap_err();
        assert!(err.to_string().contains("`m`"), "{err}");
    }
}
