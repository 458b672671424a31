//! MongoDB access: the connection, the indexes Courier needs, and the one transactional write
//! path (document changes and their outbox records commit together or not at all).

use std::time::Duration;

use mongodb::{
    Client, Collection, Database, IndexModel,
    bson::{Document, doc, oid::ObjectId},
    error::{ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT},
    options::{ClientOptions, IndexOptions},
};

use crate::{
    documents::VERSION_FIELD,
    outbox::{OUTBOX_COLLECTION, OutboxRecord},
};

/// Attempts for a transaction that keeps hitting transient errors (write conflicts, elections).
const TRANSACTION_ATTEMPTS: usize = 5;

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
    #[error(transparent)]
    Mongo(#[from] mongodb::error::Error),
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    db: Database,
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
        Ok(Store { client, db })
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
        let mut session = self.client.start_session().await?;
        let mut attempt = 0;
        'transaction: loop {
            attempt += 1;
            session.start_transaction().await?;
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
