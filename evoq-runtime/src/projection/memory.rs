//! `InMemoryReadModel`: the read model that ships with the runtime.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::definition::{ReadModel, ReadModelError};

/// The in-memory key-value read model: string keys, JSON values, typed through serde.
///
/// Cheap to clone: every clone is the same model, so a projection holds one clone and the
/// queries another. Keys are ordered, so [`list`](Self::list) returns a prefix in key order.
/// Its changes are visible at once.
///
/// It keeps its projection's checkpoint in memory, beside its entries
/// ([`ReadModel::keeps_checkpoint`]): a new process starts with an empty model and replays every
/// event into it, whatever the event store's checkpoints say, so the model is never silently
/// empty and a consistency token is never reported reached before the model holds it.
///
/// ```
/// use evoq_runtime::InMemoryReadModel;
///
/// let model = InMemoryReadModel::new();
/// model.put("account/1", &50u64)?;
/// model.put("account/2", &70u64)?;
/// assert_eq!(model.get::<u64>("account/1")?, Some(50));
/// assert_eq!(model.list::<u64>("account/")?.len(), 2);
/// assert!(model.delete("account/1"));
/// model.clear();
/// assert!(model.is_empty());
/// # Ok::<(), evoq_runtime::ReadModelError>(())
/// ```
#[derive(Clone, Default)]
pub struct InMemoryReadModel {
    entries: Arc<RwLock<BTreeMap<String, Value>>>,
    /// The checkpoint of each projection writing to it.
    checkpoints: Arc<Mutex<HashMap<String, u64>>>,
}

impl InMemoryReadModel {
    /// An empty read model.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Value>> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Value>> {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value of `key`, as a `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ReadModelError> {
        let Some(value) = self.read().get(key).cloned() else {
            return Ok(None);
        };
        serde_json::from_value(value)
            .map(Some)
            .map_err(|error| ReadModelError::Deserialize {
                key: key.to_owned(),
                reason: error.to_string(),
            })
    }

    /// Sets `key` to `value`.
    pub fn put<T: Serialize + ?Sized>(
        &self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<(), ReadModelError> {
        let key = key.into();
        let value = serde_json::to_value(value).map_err(|error| ReadModelError::Serialize {
            key: key.clone(),
            reason: error.to_string(),
        })?;
        self.write().insert(key, value);
        Ok(())
    }

    /// Removes `key`; whether it was there.
    pub fn delete(&self, key: &str) -> bool {
        self.write().remove(key).is_some()
    }

    /// Every entry whose key starts with `prefix`, in key order, as `T`s.
    pub fn list<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, ReadModelError> {
        let entries: Vec<(String, Value)> = self
            .read()
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        entries
            .into_iter()
            .map(|(key, value)| match serde_json::from_value(value) {
                Ok(value) => Ok((key, value)),
                Err(error) => Err(ReadModelError::Deserialize {
                    key,
                    reason: error.to_string(),
                }),
            })
            .collect()
    }

    /// Removes every entry (and the checkpoints kept with them).
    pub fn clear(&self) {
        self.write().clear();
        self.checkpoints().clear();
    }

    fn checkpoints(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.checkpoints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// A copy of every entry, as JSON (to compare two read models, say).
    pub fn to_map(&self) -> BTreeMap<String, Value> {
        self.read().clone()
    }
}

impl fmt::Debug for InMemoryReadModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryReadModel")
            .field("entries", &self.len())
            .finish()
    }
}

#[async_trait]
impl ReadModel for InMemoryReadModel {
    async fn clear(&self) -> Result<(), ReadModelError> {
        InMemoryReadModel::clear(self);
        Ok(())
    }

    async fn commit(&self, projection: &str, position: u64) -> Result<bool, ReadModelError> {
        self.checkpoints().insert(projection.to_owned(), position);
        Ok(true)
    }

    async fn checkpoint(&self, projection: &str) -> Result<Option<u64>, ReadModelError> {
        Ok(self.checkpoints().get(projection).copied())
    }

    fn keeps_checkpoint(&self) -> bool {
        true
    }
}
