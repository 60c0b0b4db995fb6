//! The consensus log as a trait: an append-only store of opaque records, each with an
//! optional sequence tag, kept across restarts. [`crate::ConsensusLog`] keeps them in
//! RocksDB; [`MemoryLog`] keeps them in memory (the simulator's "disk", which survives
//! a simulated crash because the simulator keeps the value).

use crate::error::ExecError;

/// One record: its optional sequence tag and its bytes.
pub type Record = (Option<u64>, Vec<u8>);

/// What a driver needs from a consensus log.
pub trait RecordLog {
    /// Appends records in ONE atomic write: after a crash all of them are there or none.
    fn append(&mut self, records: &[Record]) -> Result<(), ExecError>;

    /// Every record with its key, in append order (keys increase).
    fn load_keyed(&self) -> Result<Vec<(u64, Record)>, ExecError>;

    /// Deletes the records with these keys, in one write.
    fn remove(&mut self, keys: &[u64]) -> Result<(), ExecError>;

    /// Deletes the records whose tag is at most `stable` (untagged records stay), in one
    /// write.
    fn compact(&mut self, stable: u64) -> Result<(), ExecError>;

    /// Every record, in append order.
    fn load(&self) -> Result<Vec<Record>, ExecError> {
        Ok(self.load_keyed()?.into_iter().map(|(_, r)| r).collect())
    }

    /// Drops the records that later ones made useless, as `superseded` decides: it gets
    /// the records decoded, in append order (only those without a sequence tag if
    /// `untagged_only`: the caller's tags mark records only the stable checkpoint
    /// retires), and says which to drop. They go in one write. Returns the decoded
    /// records left.
    fn drop_superseded<R: serde::de::DeserializeOwned>(
        &mut self,
        untagged_only: bool,
        superseded: impl FnOnce(&[R]) -> Vec<bool>,
    ) -> Result<Vec<R>, ExecError>
    where
        Self: Sized,
    {
        let mut keys = Vec::new();
        let mut records = Vec::new();
        for (key, (tag, bytes)) in self.load_keyed()? {
            if untagged_only && tag.is_some() {
                continue;
            }
            let rec: R = postcard::from_bytes(&bytes).map_err(|e| {
                ExecError::Corrupt(format!("consensus log record {key} does not decode: {e}"))
            })?;
            keys.push(key);
            records.push(rec);
        }
        let drop = superseded(&records);
        if drop.len() != records.len() {
            return Err(ExecError::Storage(format!(
                "asked about {} consensus log records, told about {}",
                records.len(),
                drop.len()
            )));
        }
        let gone: Vec<u64> = keys
            .iter()
            .zip(&drop)
            .filter(|(_, d)| **d)
            .map(|(k, _)| *k)
            .collect();
        self.remove(&gone)?;
        Ok(records
            .into_iter()
            .zip(drop)
            .filter(|(_, d)| !d)
            .map(|(r, _)| r)
            .collect())
    }
}

impl<L: RecordLog + ?Sized> RecordLog for Box<L> {
    fn append(&mut self, records: &[Record]) -> Result<(), ExecError> {
        (**self).append(records)
    }
    fn load_keyed(&self) -> Result<Vec<(u64, Record)>, ExecError> {
        (**self).load_keyed()
    }
    fn remove(&mut self, keys: &[u64]) -> Result<(), ExecError> {
        (**self).remove(keys)
    }
    fn compact(&mut self, stable: u64) -> Result<(), ExecError> {
        (**self).compact(stable)
    }
}

/// A consensus log in memory.
#[derive(Clone, Debug, Default)]
pub struct MemoryLog {
    records: std::collections::BTreeMap<u64, Record>,
    next: u64,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True if it holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl RecordLog for MemoryLog {
    fn append(&mut self, records: &[Record]) -> Result<(), ExecError> {
        for r in records {
            self.records.insert(self.next, r.clone());
            self.next += 1;
        }
        Ok(())
    }

    fn load_keyed(&self) -> Result<Vec<(u64, Record)>, ExecError> {
        Ok(self.records.iter().map(|(k, r)| (*k, r.clone())).collect())
    }

    fn remove(&mut self, keys: &[u64]) -> Result<(), ExecError> {
        for k in keys {
            self.records.remove(k);
        }
        Ok(())
    }

    fn compact(&mut self, stable: u64) -> Result<(), ExecError> {
        self.records
            .retain(|_, (tag, _)| tag.is_none_or(|t| t > stable));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_log_appends_compacts_and_removes() {
        let mut log = MemoryLog::new();
        log.append(&[(Some(1), vec![1]), (None, vec![2]), (Some(5), vec![3])])
            .expect("append");
        log.append(&[(Some(9), vec![4])]).expect("append");
        let keys: Vec<u64> = log
            .load_keyed()
            .expect("load")
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(keys, vec![0, 1, 2, 3]);
        log.compact(5).expect("compact");
        assert_eq!(
            log.load().expect("load"),
            vec![(None, vec![2]), (Some(9), vec![4])]
        );
        log.remove(&[1]).expect("remove");
        assert_eq!(log.load().expect("load"), vec![(Some(9), vec![4])]);
        // keys are never reused after a removal
        log.append(&[(None, vec![5])]).expect("append");
        let keys: Vec<u64> = log
            .load_keyed()
            .expect("load")
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(keys, vec![3, 4]);
    }
}
