//! MongoDB access: the connection, the indexes Courier needs, the query time limit every read
//! carries (`maxTimeMS`), and the one transactional write path (document changes and their
//! outbox records commit together or not at all; field names are checked before anything is
//! written).

use std::{sync::Arc, time::Duration};

use mongodb::{
    Client, Collection, Database, IndexModel,
    bson::{Document, doc, oid::ObjectId},
    error::{ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT},
    options::{ClientOptions, IndexOptions},
};

use crate::{
    admission::{Refusal, StreamGate},
    documents::{FieldNameError, VERSION_FIELD, check_field_names, check_update_values},
    outbox::{OUTBOX_COLLECTION, OutboxRecord},
};

/// Attempts for a transaction that keeps hitting transient errors (write conflicts, elections).
const TRANSACTION_ATTEMPTS: usize = 5;

/// The server-side time limit of every query (`maxTimeMS`) and transaction commit
/// (`maxCommitTimeMS`) unless the service configures another ([`Store::with_query_timeout`]).
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// MongoDB's error code for an operation that outlived its `maxTimeMS`.
const MAX_TIME_MS_EXPIRED: i32 = 50;

/// One write inside a transaction. Replace and delete apply only to the expected version
/// (optimistic concurrency): otherwise the whole transaction fails with `VersionConflict`.
#[derive(Debug, Clone)]
pub enum Write {
    Insert {
        collection: String,
        document: Document,
    },
    Replace {
        collection: String,
        id: ObjectId,
        expected_version: i64,
        document: Document,
    },
    Delete {
        collection: String,
        id: ObjectId,
        expected_version: i64,
    },
    /// An update operator document (`$set`, `$inc`, …) applied to the one document `filter`
    /// matches; no match fails the transaction with `VersionConflict` (the filter is the guard,
    /// e.g. `{_id, last_seq: n}` to allocate the next sequence number).
    Update {
        collection: String,
        filter: Document,
        update: Document,
    },
    /// Deletes the documents `filter` matches, which must be exactly `count` of them; otherwise
    /// the transaction fails with `VersionConflict` (e.g. another replica took them first).
    DeleteMatching {
        collection: String,
        filter: Document,
        count: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The document changed (or vanished) since it was read.
    #[error("the document changed since it was read")]
    VersionConflict,
    /// The store stopped answering while committing: the change may or may not be stored.
    #[error("the commit's outcome is unknown: {0}")]
    OutcomeUnknown(#[source] mongodb::error::Error),
    /// A document to write holds a field name MongoDB would read as an operator or a path:
    /// nothing was written.
    #[error("a document of '{collection}' cannot be stored: {error}")]
    FieldName { collection: String, error: FieldNameError },
    /// The write's events or tasks would go to a stream that is full (its `max_bytes` reached):
    /// refused before anything was written (see [`crate::admission`]).
    #[error("the {stream} stream is full; nothing was written")]
    StreamFull { stream: &'static str },
    /// The outbox holds more records than its bound (NATS unreachable for long, or too slow):
    /// refused before anything was written (see [`crate::admission`]).
    #[error("too many changes wait to be published; nothing was written")]
    OutboxFull,
    #[error(transparent)]
    Mongo(#[from] mongodb::error::Error),
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    db: Database,
    query_timeout: Duration,
    gate: Arc<StreamGate>,
}

impl StoreError {
    /// Whether a commit failed because another transaction wrote the same documents first (a
    /// write conflict that outlasted the commit's own retries), as opposed to a store that cannot
    /// be reached or a refused write.
    pub fn is_lost_race(&self) -> bool {
        match self {
            StoreError::VersionConflict => true,
            StoreError::Mongo(err) => {
                err.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR)
                    && !is_unavailable(err)
            }
            StoreError::OutcomeUnknown(_)
            | StoreError::FieldName { .. }
            | StoreError::StreamFull { .. }
            | StoreError::OutboxFull => false,
        }
    }
}

/// Whether an error means "the database cannot be reached right now" (→ 503), as opposed to a
/// problem with the request or the data.
pub fn is_unavailable(err: &mongodb::error::Error) -> bool {
    matches!(
        err.kind.as_ref(),
        ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
    )
}

/// Whether an error means the query outlived its time limit (`maxTimeMS`, see
/// [`Store::with_query_timeout`]): the server stopped it; nothing was changed by it.
pub fn is_query_timeout(err: &mongodb::error::Error) -> bool {
    matches!(err.kind.as_ref(), ErrorKind::Command(command) if command.code == MAX_TIME_MS_EXPIRED)
}

impl Write {
    /// The collection written.
    pub fn collection(&self) -> &str {
        match self {
            Write::Insert { collection, .. }
            | Write::Replace { collection, .. }
            | Write::Delete { collection, .. }
            | Write::Update { collection, .. }
            | Write::DeleteMatching { collection, .. } => collection,
        }
    }

    /// The field-name rule ([`check_field_names`]) on what this write stores.
    fn check_field_names(&self) -> Result<(), StoreError> {
        let checked = match self {
            Write::Insert { document, .. } | Write::Replace { document, .. } => {
                check_field_names(document)
            }
            Write::Update { update, .. } => check_update_values(update),
            Write::Delete { .. } | Write::DeleteMatching { .. } => Ok(()),
        };
        checked.map_err(|error| StoreError::FieldName {
            collection: self.collection().to_owned(),
            error,
        })
    }
}

impl Store {
    /// Builds the client. The driver connects lazily, so this succeeds while MongoDB is down;
    /// `timeout` bounds how long an operation waits for a server before failing (→ 503).
    pub async fn connect(
        uri: &str,
        database: &str,
        timeout: Duration,
        app_name: &str,
    ) -> mongodb::error::Result<Self> {
        let mut options = ClientOptions::parse(uri).await?;
        options.app_name = Some(app_name.into());
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        let client = Client::with_options(options)?;
        let db = client.database(database);
        Ok(Store {
            client,
            db,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            gate: Arc::new(StreamGate::default()),
        })
    }

    /// The same store with `timeout` as the server-side limit of every query (`maxTimeMS`) and
    /// commit (`maxCommitTimeMS`); a query that outlives it fails ([`is_query_timeout`]).
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// Which streams this process found full (shared by its clones and its outbox).
    pub fn stream_gate(&self) -> &StreamGate {
        &self.gate
    }

    /// The limit every query carries (`.max_time(store.query_timeout())`).
    pub fn query_timeout(&self) -> Duration {
        self.query_timeout
    }

    pub fn collection(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    pub fn outbox(&self) -> Collection<OutboxRecord> {
        self.db.collection(OUTBOX_COLLECTION)
    }

    pub async fn ping(&self) -> mongodb::error::Result<()> {
        self.db.run_command(doc! {"ping": 1}).await.map(|_| ())
    }

    /// Creates the indexes the outbox and the scheduled tasks need (idempotent).
    pub async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        self.ensure_scheduled_task_indexes().await?;
        let outbox = self.outbox();
        outbox
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"doc_key": 1, "doc_version": 1})
                    .options(IndexOptions::builder().name("doc_order".to_owned()).build())
                    .build(),
            )
            .await?;
        outbox
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"created_at": 1})
                    .options(IndexOptions::builder().name("age".to_owned()).build())
                    .build(),
            )
            .await?;
        Ok(())
    }

    /// Creates the indexes a collection declares (idempotent; named after their fields).
    pub async fn ensure_collection_indexes(
        &self,
        spec: &courier_core::collection_spec::CollectionSpec,
    ) -> mongodb::error::Result<()> {
        for index in &spec.indexes {
            let mut keys = Document::new();
            for field in &index.fields {
                match field.strip_prefix('-') {
                    Some(name) => keys.insert(name, -1),
                    None => keys.insert(field.as_str(), 1),
                };
            }
            let name =
                format!("{}{}", index.fields.join("_"), if index.unique { "_unique" } else { "" });
            let options = IndexOptions::builder().name(name).unique(index.unique).build();
            self.collection(&spec.name)
                .create_index(IndexModel::builder().keys(keys).options(options).build())
                .await?;
        }
        Ok(())
    }

    /// Applies `writes` and inserts `outbox` in one transaction, retrying transient failures as
    /// the MongoDB transaction protocol prescribes.
    pub async fn commit(
        &self,
        writes: &[Write],
        outbox: &[OutboxRecord],
    ) -> Result<(), StoreError> {
        // The rule on field names, before anything is written.
        for write in writes {
            write.check_field_names()?;
        }
        // No new records for a stream that refuses them: the outbox would only grow.
        match self.gate.refusal(outbox) {
            None => {}
            Some(Refusal::StreamFull(stream)) => return Err(StoreError::StreamFull { stream }),
            Some(Refusal::OutboxFull) => return Err(StoreError::OutboxFull),
        }
        let mut session = self.client.start_session().await?;
        let mut attempt = 0;
        'transaction: loop {
            attempt += 1;
            session.start_transaction().max_commit_time(self.query_timeout).await?;
            let applied = async {
                for write in writes {
                    match write {
                        Write::Insert { collection, document } => {
                            self.collection(collection)
                                .insert_one(document)
                                .session(&mut session)
                                .await?;
                        }
                        Write::Replace { collection, id, expected_version, document } => {
                            let filter = doc! {"_id": id, VERSION_FIELD: expected_version};
                            let result = self
                                .collection(collection)
                                .replace_one(filter, document)
                                .session(&mut session)
                                .await?;
                            if result.matched_count != 1 {
                                return Err(StoreError::VersionConflict);
                            }
                        }
                        Write::Update { collection, filter, update } => {
                            let result = self
                                .collection(collection)
                                .update_one(filter.clone(), update.clone())
                                .session(&mut session)
                                .await?;
                            if result.matched_count != 1 {
                                return Err(StoreError::VersionConflict);
                            }
                        }
                        Write::DeleteMatching { collection, filter, count } => {
                            let result = self
                                .collection(collection)
                                .delete_many(filter.clone())
                                .session(&mut session)
                                .await?;
                            if result.deleted_count != *count {
                                return Err(StoreError::VersionConflict);
                            }
                        }
                        Write::Delete { collection, id, expected_version } => {
                            let filter = doc! {"_id": id, VERSION_FIELD: expected_version};
                            let result = self
                                .collection(collection)
                                .delete_one(filter)
                                .session(&mut session)
                                .await?;
                            if result.deleted_count != 1 {
                                return Err(StoreError::VersionConflict);
                            }
                        }
                    }
                }
                if !outbox.is_empty() {
                    self.outbox().insert_many(outbox).session(&mut session).await?;
                }
                Ok::<_, StoreError>(())
            }
            .await;
            if let Err(err) = applied {
                let unreachable = matches!(&err, StoreError::Mongo(m) if is_unavailable(m));
                // An unreachable store would make the abort wait out the timeout again; the
                // server discards the abandoned transaction by itself.
                if unreachable {
                    return Err(err);
                }
                let _ = session.abort_transaction().await;
                if let StoreError::Mongo(mongo) = &err
                    && mongo.contains_label(TRANSIENT_TRANSACTION_ERROR)
                    && attempt < TRANSACTION_ATTEMPTS
                {
                    continue 'transaction;
                }
                return Err(err);
            }
            loop {
                match session.commit_transaction().await {
                    Ok(()) => return Ok(()),
                    // Reachable but unsure (e.g. a failover): retrying the commit is safe.
                    Err(err)
                        if err.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                            && !is_unavailable(&err)
                            && attempt < TRANSACTION_ATTEMPTS =>
                    {
                        attempt += 1;
                        continue;
                    }
                    Err(err)
                        if err.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                            || is_unavailable(&err) =>
                    {
                        return Err(StoreError::OutcomeUnknown(err));
                    }
                    Err(err)
                        if err.contains_label(TRANSIENT_TRANSACTION_ERROR)
                            && attempt < TRANSACTION_ATTEMPTS =>
                    {
                        continue 'transaction;
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        }
    }
}
