//! Object names as Azure treats them: case-insensitive, with the case they were created in
//! preserved. `Key01` and `key01` are one key, and responses spell it as it was created.
//!
//! [`NameMap`] is the only map of keys and deleted keys, so no lookup can forget to fold the
//! case. It persists as a plain map from created names to values.

use std::collections::BTreeMap;
use std::collections::btree_map;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Values by case-insensitive name, ordered by folded name (the order lists page in).
#[derive(Debug, Clone)]
pub struct NameMap<V> {
    /// Folded name → (name as created, value).
    entries: BTreeMap<String, (String, V)>,
}

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        NameMap {
            entries: BTreeMap::new(),
        }
    }
}

/// Azure object names are `[0-9a-zA-Z-]`, so ASCII folding is the whole rule.
fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl<V> NameMap<V> {
    pub fn get(&self, name: &str) -> Option<&V> {
        self.entries.get(&fold(name)).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        self.entries.get_mut(&fold(name)).map(|(_, v)| v)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.entries.contains_key(&fold(name))
    }

    /// The name as it was created.
    pub fn created_name(&self, name: &str) -> Option<&str> {
        self.entries.get(&fold(name)).map(|(n, _)| n.as_str())
    }

    /// Inserts under `name`; an entry of the same name in another case keeps its spelling.
    pub fn insert(&mut self, name: &str, value: V) -> Option<V> {
        match self.entries.entry(fold(name)) {
            btree_map::Entry::Occupied(mut e) => Some(std::mem::replace(&mut e.get_mut().1, value)),
            btree_map::Entry::Vacant(e) => {
                e.insert((name.to_string(), value));
                None
            }
        }
    }

    /// The entry of `name`, made by `make` under this spelling when there is none.
    pub fn get_or_insert_with(&mut self, name: &str, make: impl FnOnce() -> V) -> &mut V {
        &mut self
            .entries
            .entry(fold(name))
            .or_insert_with(|| (name.to_string(), make()))
            .1
    }

    /// Removes the entry; returns its name as created and its value.
    pub fn remove(&mut self, name: &str) -> Option<(String, V)> {
        self.entries.remove(&fold(name))
    }

    /// (folded name, name as created, value) after the folded name `after` (from the start
    /// without one), in folded-name order: a list page costs its own length, not the map's.
    pub fn after<'a>(
        &'a self,
        after: Option<&str>,
    ) -> impl Iterator<Item = (&'a str, &'a str, &'a V)> + use<'a, V> {
        use std::ops::Bound;
        let start = match after {
            Some(a) => Bound::Excluded(a.to_string()),
            None => Bound::Unbounded,
        };
        self.entries
            .range((start, Bound::Unbounded))
            .map(|(folded, (n, v))| (folded.as_str(), n.as_str(), v))
    }

    /// (name as created, value), in folded-name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.values().map(|(n, v)| (n.as_str(), v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.values().map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.entries.retain(|_, (_, v)| keep(v));
    }
}

impl<V> std::ops::Index<&str> for NameMap<V> {
    type Output = V;

    fn index(&self, name: &str) -> &V {
        self.get(name).expect("the caller checked the name exists")
    }
}

impl<V> std::ops::Index<&String> for NameMap<V> {
    type Output = V;

    fn index(&self, name: &String) -> &V {
        &self[name.as_str()]
    }
}

impl<V: Serialize> Serialize for NameMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for NameMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let plain = BTreeMap::<String, V>::deserialize(d)?;
        let mut map = NameMap::default();
        for (name, v) in plain {
            map.insert(&name, v);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differing_in_case_are_one_entry_spelled_as_created() {
        let mut m = NameMap::default();
        assert!(m.insert("Key01", 1).is_none());
        assert_eq!(m.insert("KEY01", 2), Some(1));
        assert_eq!(m.get("key01"), Some(&2));
        assert_eq!(m.created_name("kEy01"), Some("Key01"));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![("Key01", &2)]);
        assert_eq!(m.remove("key01"), Some(("Key01".to_string(), 2)));
        assert!(m.is_empty());
    }

    #[test]
    fn it_persists_as_a_map_of_created_names() {
        let mut m = NameMap::default();
        m.insert("Alpha", 1);
        m.insert("beta", 2);
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"Alpha":1,"beta":2}"#);
        let back: NameMap<i32> = serde_json::from_str(&text).unwrap();
        assert_eq!(back.get("ALPHA"), Some(&1));
        assert_eq!(back.created_name("alpha"), Some("Alpha"));
    }
}
