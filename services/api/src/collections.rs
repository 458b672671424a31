//! The collections the api serves: loaded from `collections.yaml` (the format in
//! `courier_core::collection_spec`), checked at start-up with errors naming the file, collection
//! and problem, compiled once, and reloaded without restart when the file changes.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use courier_core::collection_spec::{
    AccessRule, CollectionSpec, CollectionsFile, Fields, FileError, SpecError, TriggerOn, ValidSpec,
};
pub use courier_core::collection_spec::{FieldType, is_valid_field_name};
use courier_store::TaskRequest;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::error::FieldError;

/// A problem with the collections configuration; the message names file, collection and problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// One collection, compiled.
pub struct CollectionDef {
    pub spec: CollectionSpec,
    validator: jsonschema::Validator,
    /// Declared top-level properties and their types.
    fields: Fields,
    /// The declared write rate (`None`: the api's default).
    rate: Option<courier_core::rate::Rate>,
}

impl std::fmt::Debug for CollectionDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectionDef").field("name", &self.spec.name).finish_non_exhaustive()
    }
}

impl courier_core::filter::FieldTypes for CollectionDef {
    fn field_type(&self, field: &str) -> Option<FieldType> {
        self.fields.field_type(field)
    }

    fn collection_name(&self) -> &str {
        &self.spec.name
    }
}

impl CollectionDef {
    /// Checks (`CollectionSpec::validate`, the rules every service shares) and compiles a spec,
    /// or says what is wrong with it (without the file name).
    pub fn from_spec(spec: CollectionSpec) -> Result<Self, SpecError> {
        let valid = spec.validate()?;
        Ok(CollectionDef::compiled(spec, valid))
    }

    fn compiled(spec: CollectionSpec, valid: ValidSpec) -> Self {
        // `validate` has checked the rate.
        let rate = spec.rate().ok().flatten();
        CollectionDef { spec, validator: valid.validator, fields: valid.fields, rate }
    }

    /// How often one writer may write this collection, if it declares it (`rate:`).
    pub fn rate(&self) -> Option<courier_core::rate::Rate> {
        self.rate
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn write_access(&self) -> &AccessRule {
        &self.spec.access.write
    }

    pub fn read_access(&self) -> &AccessRule {
        &self.spec.access.read
    }

    /// Whether this collection's events keep user ids (`created_by`, `actor`).
    pub fn events_carry_user_ids(&self) -> bool {
        self.spec.events_carry_user_ids()
    }

    /// The type of a top-level field (see [`Fields::field_type`]).
    pub fn field_type(&self, name: &str) -> Option<FieldType> {
        self.fields.field_type(name)
    }

    /// Fields Courier manages (`readOnly` in the schema): clients cannot set them.
    pub fn read_only_fields(&self) -> impl Iterator<Item = &str> {
        self.fields.declared.iter().filter(|(_, f)| f.read_only).map(|(name, _)| name.as_str())
    }

    /// The tasks to enqueue on `trigger`: kind, priority and delay.
    pub fn tasks_on(&self, trigger: TriggerOn) -> impl Iterator<Item = TaskRequest> + '_ {
        self.spec.tasks.iter().filter(move |t| t.on.contains(&trigger)).map(|t| TaskRequest {
            kind: t.kind.clone(),
            priority: t.priority,
            // Checked when the collection was loaded.
            delay: t.delay().ok().flatten(),
            external: t.external,
        })
    }

    /// Checks a document against the schema, listing every failing field.
    pub fn validate(&self, document: &Value) -> Result<(), Vec<FieldError>> {
        let mut fields: Vec<FieldError> =
            self.validator.iter_errors(document).flat_map(|err| field_errors(&err)).collect();
        if fields.is_empty() {
            return Ok(());
        }
        fields.sort_by(|a, b| a.field.cmp(&b.field));
        fields.dedup();
        Err(fields)
    }
}

/// Turns one schema error into the field(s) it concerns. `required` and `additionalProperties`
/// errors are reported on the missing/unexpected field itself, not on its parent object.
pub(crate) fn field_errors(err: &jsonschema::ValidationError<'_>) -> Vec<FieldError> {
    use jsonschema::error::ValidationErrorKind as Kind;
    let parent = pointer_to_dotted(err.instance_path().as_str());
    let child =
        |name: &str| if parent.is_empty() { name.to_owned() } else { format!("{parent}.{name}") };
    match err.kind() {
        Kind::Required { property } => {
            let name = property.as_str().map(str::to_owned).unwrap_or_else(|| property.to_string());
            vec![FieldError { field: child(&name), reason: "is required".into() }]
        }
        Kind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|name| FieldError { field: child(name), reason: "is not a known field".into() })
            .collect(),
        _ => vec![FieldError {
            field: if parent.is_empty() { "(document)".into() } else { parent },
            reason: err.to_string(),
        }],
    }
}

/// `/a/0/b~1c` → `a.0.b/c`.
fn pointer_to_dotted(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|segment| segment.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

fn config_error(source: &str, err: FileError) -> ConfigError {
    ConfigError(format!("{source}: {err}"))
}

/// The collections the api serves, by name.
#[derive(Debug, Default)]
pub struct Collections {
    by_name: HashMap<String, Arc<CollectionDef>>,
}

impl Collections {
    /// Parses and checks a `collections.yaml` text; `source` names it in errors.
    pub fn from_yaml(text: &str, source: &str) -> Result<Self, ConfigError> {
        let file = CollectionsFile::from_yaml(text).map_err(|err| config_error(source, err))?;
        Self::from_file(file, source)
    }

    /// Checks (`CollectionsFile::validate`) and compiles a parsed file.
    pub fn from_file(file: CollectionsFile, source: &str) -> Result<Self, ConfigError> {
        let valid = file.validate().map_err(|err| config_error(source, err))?;
        let by_name = file
            .collections
            .into_iter()
            .zip(valid)
            .map(|(spec, valid)| {
                (spec.name.clone(), Arc::new(CollectionDef::compiled(spec, valid)))
            })
            .collect();
        Ok(Collections { by_name })
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError(format!("{}: cannot read collections file: {err}", path.display()))
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    pub fn get(&self, name: &str) -> Option<Arc<CollectionDef>> {
        self.by_name.get(name).cloned()
    }

    /// All collections, by name.
    pub fn all(&self) -> Vec<Arc<CollectionDef>> {
        let mut all: Vec<_> = self.by_name.values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }
}

/// The current collections, swappable at run time (file reloads).
#[derive(Clone)]
pub struct CollectionsHandle {
    current: Arc<RwLock<Arc<Collections>>>,
    /// How many changed files [`Self::watch_file`] refused (kept the previous collections).
    rejected: Arc<tokio::sync::watch::Sender<u64>>,
}

impl CollectionsHandle {
    pub fn new(collections: Collections) -> Self {
        CollectionsHandle {
            current: Arc::new(RwLock::new(Arc::new(collections))),
            rejected: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// Counts the reloads refused because the changed file was invalid.
    pub fn rejected_reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rejected.subscribe()
    }

    pub fn current(&self) -> Arc<Collections> {
        self.current.read().expect("collections lock poisoned").clone()
    }

    pub fn replace(&self, collections: Collections) {
        *self.current.write().expect("collections lock poisoned") = Arc::new(collections);
    }

    /// Polls `path` every `interval`; a changed, valid file replaces the collections and
    /// `on_change` runs (index creation); an invalid one is logged and the old set kept. The
    /// file's content is captured now, so a change made before the future first runs counts.
    /// Reading the path each time also follows a Kubernetes ConfigMap's symlink swaps.
    pub fn watch_file<F, Fut>(
        self,
        path: PathBuf,
        interval: Duration,
        shutdown: CancellationToken,
        on_change: F,
    ) -> impl std::future::Future<Output = ()>
    where
        F: Fn(Arc<Collections>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let watched = path.clone();
        courier_core::file_watch::on_file_change(watched, interval, shutdown, move || {
            let outcome = Collections::load(&path).map(|collections| {
                let names: Vec<String> =
                    collections.all().iter().map(|c| c.name().to_owned()).collect();
                self.replace(collections);
                tracing::info!(file = %path.display(), ?names, "collections reloaded");
                self.current()
            });
            let reloaded = match outcome {
                Ok(current) => Some(on_change(current)),
                Err(err) => {
                    tracing::error!(%err, "collections file changed but is invalid; keeping the previous collections");
                    self.rejected.send_modify(|count| *count += 1);
                    None
                }
            };
            async move {
                if let Some(done) = reloaded {
                    done.await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::collection_spec::AccessLevel;
    use serde_json::json;

    fn shipped() -> Collections {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../collections.yaml");
        Collections::load(&path).expect("the shipped collections.yaml is valid")
    }

    #[test]
    fn the_shipped_file_declares_products_desks_pets_and_notes() {
        let collections = shipped();
        let names: Vec<_> = collections.all().iter().map(|c| c.name().to_owned()).collect();
        assert_eq!(names, ["desks", "notes", "pets", "products"]);
        let notes = collections.get("notes").unwrap();
        assert!(notes.read_access().is_per_document() && notes.events_carry_user_ids());
        let pets = collections.get("pets").unwrap();
        assert_eq!(pets.write_access(), &AccessLevel::Owner.into());
        assert!(!pets.events_carry_user_ids(), "anonymous clients read pets");
        assert_eq!(collections.get("desks").unwrap().write_access(), &AccessRule::public());
        assert_eq!(collections.get("products").unwrap().write_access(), &AccessRule::public());
        assert_eq!(
            pets.tasks_on(TriggerOn::Update).collect::<Vec<_>>(),
            [TaskRequest::now("pets.enrich")]
        );
        let mut read_only: Vec<_> = pets.read_only_fields().collect();
        read_only.sort();
        assert_eq!(read_only, ["enrichment", "owner"]);
        assert_eq!(pets.field_type("created_by"), Some(FieldType::String));
        assert_eq!(pets.field_type("age"), Some(FieldType::Integer));
        assert_eq!(pets.field_type("vaccinated"), Some(FieldType::Boolean));
        assert_eq!(
            pets.field_type("colour"),
            None,
            "closed schema: undeclared fields do not exist"
        );
    }

    #[test]
    fn a_trigger_carries_its_priority_and_delay() {
        let yaml = "collections: [{name: a, schema: {type: object}, tasks: [
            {kind: a.now, on: [create, update], priority: high},
            {kind: a.later, on: [create], priority: low, delay: 7d}]}]";
        let collections = Collections::from_yaml(yaml, "collections.yaml").unwrap();
        let a = collections.get("a").unwrap();
        let on_create: Vec<TaskRequest> = a.tasks_on(TriggerOn::Create).collect();
        assert_eq!(
            on_create,
            [
                TaskRequest {
                    kind: "a.now".into(),
                    priority: courier_core::Priority::High,
                    delay: None,
                    external: false,
                },
                TaskRequest {
                    kind: "a.later".into(),
                    priority: courier_core::Priority::Low,
                    delay: Some(Duration::from_secs(7 * 86_400)),
                    external: false,
                },
            ]
        );
        assert_eq!(a.tasks_on(TriggerOn::Update).count(), 1);
    }

    #[test]
    fn every_failing_field_is_named() {
        let products = shipped().get("products").unwrap();
        assert_eq!(
            products.validate(&json!({"nombre": "Camiseta", "precio": 25.99, "talla": "M"})),
            Ok(())
        );
        let errors = products.validate(&json!({"precio": "cheap", "colour": "red"})).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["colour", "nombre", "precio"]);
        assert!(errors[1].reason.contains("required"));
        assert!(errors[2].reason.contains("number"), "{}", errors[2].reason);
        assert_eq!(products.validate(&json!([1, 2])).unwrap_err()[0].field, "(document)");
    }

    #[test]
    fn desk_sizes_must_be_positive() {
        let desks = shipped().get("desks").unwrap();
        let errors = desks.validate(&json!({"name": "d", "width": 0, "height": -3})).unwrap_err();
        assert_eq!(
            errors.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            ["height", "width"]
        );
    }

    #[test]
    fn nested_pointers_become_dotted_paths() {
        assert_eq!(pointer_to_dotted("/a/0/b~1c"), "a.0.b/c");
        assert_eq!(pointer_to_dotted(""), "");
    }

    fn error_for(yaml: &str) -> String {
        Collections::from_yaml(yaml, "collections.yaml").unwrap_err().0
    }

    #[test]
    fn config_errors_name_the_file_the_collection_and_the_problem() {
        let cases = [
            (
                "collections: [{name: Bad.Name, schema: {type: object}}]",
                "collection 'Bad.Name': invalid name",
            ),
            (
                "collections: [{name: a, schema: {type: array}}]",
                "collection 'a': schema must have \"type\": \"object\"",
            ),
            (
                "collections: [{name: a, schema: {type: object, properties: {x: {type: nope}}}}]",
                "collection 'a': schema does not compile",
            ),
            (
                "collections: [{name: a, schema: {type: object}}, {name: a, schema: {type: object}}]",
                "collection 'a' is declared twice",
            ),
            (
                "collections: [{name: a, schema: {type: object, additionalProperties: false}, indexes: [{fields: [ghost]}]}]",
                "collection 'a': index 1: field 'ghost' is not declared",
            ),
            (
                "collections: [{name: a, schema: {type: object}, indexes: [{fields: []}]}]",
                "index 1: 'fields' is empty",
            ),
            (
                "collections: [{name: a, schema: {type: object}, tasks: [{kind: 'Do It', on: [create]}]}]",
                "task kind 'Do It' is invalid",
            ),
            (
                "collections: [{name: a, schema: {type: object}, tasks: [{kind: a.b, on: []}]}]",
                "'on' lists no trigger",
            ),
            (
                "collections: [{name: a, schema: {type: object}, tasks: [{kind: a.b, on: [create], priority: urgent}]}]",
                "unknown variant `urgent`",
            ),
            (
                "collections: [{name: a, schema: {type: object, properties: {id: {type: string}}}}]",
                "'id' is reserved",
            ),
            (
                "collections: [{name: a, schema: {type: object}, acess: {}}]",
                "unknown field `acess`",
            ),
            (
                "collections: [{name: auth, schema: {type: object}}]",
                "collection 'auth': the name is reserved",
            ),
            (
                "collections: [{name: collections, schema: {type: object}}]",
                "collection 'collections': the name is reserved",
            ),
            (
                "collections: [{name: a, schema: {type: object}, access: {write: admins}}]",
                "unknown access rule `admins`",
            ),
        ];
        for (yaml, expected) in cases {
            let message = error_for(yaml);
            assert!(message.starts_with("collections.yaml: "), "{message}");
            assert!(message.contains(expected), "{yaml}\n  → {message}\n  lacks {expected}");
        }
    }

    #[test]
    fn every_spec_of_the_shared_invalid_table_is_refused() {
        for entry in courier_core::collection_spec::fixtures::invalid_specs() {
            let which = if entry.name().is_empty() {
                "collection #1".to_owned()
            } else {
                format!("collection '{}'", entry.name())
            };
            let expected = format!("collections.yaml: {which}: {}", entry.problem);
            let message = error_for(&entry.file_text());
            assert!(
                message.starts_with(&expected),
                "{}: {message}\n  lacks {expected}",
                entry.case
            );
            let problem = CollectionDef::from_spec(entry.spec()).unwrap_err().to_string();
            assert!(problem.starts_with(entry.problem), "{}: {problem}", entry.case);
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Collections::load(Path::new("/nonexistent/collections.yaml")).unwrap_err();
        assert!(err.0.starts_with("/nonexistent/collections.yaml: cannot read"), "{err}");
    }

    #[tokio::test]
    async fn a_changed_file_is_reloaded_and_an_invalid_one_ignored() {
        const DEADLINE: Duration = Duration::from_secs(10);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collections.yaml");
        std::fs::write(&path, "collections: [{name: a, schema: {type: object}}]").unwrap();
        let handle = CollectionsHandle::new(Collections::load(&path).unwrap());
        let mut rejected = handle.rejected_reloads();
        let shutdown = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = tokio::spawn(handle.clone().watch_file(
            path.clone(),
            Duration::from_millis(20),
            shutdown.clone(),
            move |c| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(c.all().len());
                }
            },
        ));
        // Written whole (rename), so the watcher never reads a half-written file.
        let replace = |text: &str| {
            let staged = dir.path().join("staged.yaml");
            std::fs::write(&staged, text).unwrap();
            std::fs::rename(&staged, &path).unwrap();
        };
        replace(
            "collections: [{name: a, schema: {type: object}}, {name: b, schema: {type: object}}]",
        );
        let reloaded = tokio::time::timeout(DEADLINE, rx.recv()).await.expect("no reload");
        assert_eq!(reloaded, Some(2));
        assert!(handle.current().get("b").is_some());
        replace("collections: [{name: B!, schema: {type: object}}]");
        tokio::time::timeout(DEADLINE, rejected.wait_for(|count| *count == 1))
            .await
            .expect("the invalid file was not noticed")
            .unwrap();
        assert!(
            handle.current().get("b").is_some(),
            "an invalid file keeps the previous collections"
        );
        assert!(rx.try_recv().is_err(), "an invalid file runs no on_change");
        shutdown.cancel();
        tokio::time::timeout(DEADLINE, watcher).await.expect("the watcher did not stop").unwrap();
    }
}
