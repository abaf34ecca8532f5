//! The Neo4j side of [`crate::descriptions`]: descriptions on `MENTIONS`
//! and on entity relationships, the dirty mark and key as properties
//! (`description_dirty`, `description_key`) of the entity or relationship.

use std::collections::{BTreeMap, HashMap};

use kg_core::{ChunkId, RelType};
use neo4rs::{query, BoltMap, BoltType};

use super::{opt_string, strings, Neo4jStore};
use crate::descriptions::{
    distinct_set, entry_texts, Described, DescriptionSet, DescriptionUpdate,
};
use crate::error::StoreError;

impl Neo4jStore {
    /// What the chunks said of each of `ids`, by chunk (one query).
    pub(super) async fn mention_descriptions(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, BTreeMap<ChunkId, Vec<String>>>, StoreError> {
        let mut out: HashMap<String, BTreeMap<ChunkId, Vec<String>>> = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let rows = self
            .fetch(
                query(
                    "UNWIND $ids AS eid MATCH (e:Entity {id: eid}) \
                     MATCH (c:Chunk)-[m:MENTIONS]->(e) \
                     WHERE m.descriptions IS NOT NULL \
                     RETURN eid, c.id AS c, m.descriptions AS d",
                )
                .param("ids", ids.to_vec()),
                "read mention descriptions",
            )
            .await?;
        for r in rows {
            let (Some(e), Some(c)) = (opt_string(&r, "eid"), opt_string(&r, "c")) else {
                continue;
            };
            let ds = strings(&r, "d");
            if !ds.is_empty() {
                out.entry(e).or_default().insert(ChunkId::from_raw(c), ds);
            }
        }
        Ok(out)
    }

    /// Dirty entities after `after`, with their distinct descriptions.
    pub(super) async fn stale_entity_descriptions(
        &self,
        after: Option<&Described>,
        limit: usize,
    ) -> Result<Vec<DescriptionSet>, StoreError> {
        let after = Described::entity_cursor(after);
        let rows = self
            .fetch(
                query(
                    "MATCH (n:Entity) WHERE n.description_dirty = true AND n.id > $after \
                     RETURN n.id AS id, n.name AS name, n.type AS type, \
                     n.description AS description, n.description_key AS key \
                     ORDER BY id LIMIT $limit",
                )
                .param("after", after)
                .param("limit", i64::try_from(limit).unwrap_or(i64::MAX)),
                "read entities with new descriptions",
            )
            .await?;
        let ids: Vec<String> = rows.iter().filter_map(|r| opt_string(r, "id")).collect();
        let mut texts: HashMap<String, Vec<String>> = HashMap::new();
        if !ids.is_empty() {
            let found = self
                .fetch(
                    query(
                        "UNWIND $ids AS eid MATCH (e:Entity {id: eid}) \
                         MATCH (:Chunk)-[m:MENTIONS]->(e) \
                         WHERE m.descriptions IS NOT NULL \
                         UNWIND m.descriptions AS d RETURN DISTINCT eid, d",
                    )
                    .param("ids", ids),
                    "read mention descriptions",
                )
                .await?;
            for r in found {
                if let (Some(e), Some(d)) = (opt_string(&r, "eid"), opt_string(&r, "d")) {
                    texts.entry(e).or_default().push(d);
                }
            }
        }
        Ok(rows
            .iter()
            .filter_map(|r| {
                let id = opt_string(r, "id")?;
                let (descriptions, distinct, key) =
                    distinct_set(texts.remove(&id).unwrap_or_default());
                Some(DescriptionSet {
                    target: Described::Entity(id),
                    name: opt_string(r, "name").unwrap_or_default(),
                    kind: opt_string(r, "type").unwrap_or_default(),
                    description: opt_string(r, "description").unwrap_or_default(),
                    descriptions,
                    distinct,
                    key,
                    stored_key: opt_string(r, "key"),
                })
            })
            .collect())
    }

    /// Dirty entity relationships after `after`, with their distinct
    /// descriptions.
    pub(super) async fn stale_relation_descriptions(
        &self,
        after: Option<&Described>,
        limit: usize,
    ) -> Result<Vec<DescriptionSet>, StoreError> {
        let (s, t, o) = Described::relation_cursor(after);
        let rows = self
            .fetch(
                query(
                    "MATCH (a:Entity)-[r]->(b:Entity) WHERE r.description_dirty = true \
                     WITH a, r, b, type(r) AS t \
                     WHERE a.id > $s OR (a.id = $s AND (t > $t OR (t = $t AND b.id > $o))) \
                     RETURN a.id AS s, t, b.id AS o, a.name AS an, b.name AS bn, \
                     r.description AS description, r.description_key AS key, \
                     r.descriptions AS descriptions \
                     ORDER BY s, t, o LIMIT $limit",
                )
                .param("s", s)
                .param("t", t)
                .param("o", o)
                .param("limit", i64::try_from(limit).unwrap_or(i64::MAX)),
                "read relations with new descriptions",
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let (s, t, o) = (
                    opt_string(r, "s")?,
                    opt_string(r, "t")?,
                    opt_string(r, "o")?,
                );
                let entries = strings(r, "descriptions");
                let (descriptions, distinct, key) = distinct_set(entry_texts(&entries));
                Some(DescriptionSet {
                    name: format!(
                        "{} -{t}-> {}",
                        opt_string(r, "an").unwrap_or_else(|| s.clone()),
                        opt_string(r, "bn").unwrap_or_else(|| o.clone())
                    ),
                    kind: t.clone(),
                    description: opt_string(r, "description").unwrap_or_default(),
                    descriptions,
                    distinct,
                    key,
                    stored_key: opt_string(r, "key"),
                    target: Described::Relation {
                        source: s,
                        rel_type: t,
                        target: o,
                    },
                })
            })
            .collect())
    }

    /// Writes descriptions back in one transaction: one statement for the
    /// entities, one per relationship type (types cannot be parameters;
    /// each is a validated [`RelType`]).
    pub(super) async fn write_descriptions(
        &self,
        updates: &[DescriptionUpdate],
    ) -> Result<u64, StoreError> {
        let row = |id: Vec<(&str, String)>, u: &DescriptionUpdate| -> BoltType {
            let mut m = BoltMap::new();
            for (k, v) in id {
                m.put(k.into(), v.into());
            }
            m.put("description".into(), u.description.clone().into());
            m.put(
                "key".into(),
                u.key
                    .clone()
                    .map_or(BoltType::Null(neo4rs::BoltNull), Into::into),
            );
            BoltType::Map(m)
        };
        let mut entities: Vec<BoltType> = Vec::new();
        let mut relations: BTreeMap<String, Vec<BoltType>> = BTreeMap::new();
        for u in updates {
            match &u.target {
                Described::Entity(id) => entities.push(row(vec![("id", id.clone())], u)),
                Described::Relation {
                    source,
                    rel_type,
                    target,
                } => relations.entry(rel_type.clone()).or_default().push(row(
                    vec![("source", source.clone()), ("target", target.clone())],
                    u,
                )),
            }
        }
        const SET: &str = "SET x.description = row.description, \
             x.description_dirty = CASE WHEN row.key IS NULL THEN x.description_dirty ELSE null END, \
             x.description_key = coalesce(row.key, x.description_key) \
             RETURN count(*) AS n";
        let mut statements: Vec<(String, Vec<BoltType>)> = Vec::new();
        if !entities.is_empty() {
            statements.push((
                format!("UNWIND $rows AS row MATCH (x:Entity {{id: row.id}}) {SET}"),
                entities,
            ));
        }
        for (t, rows) in relations {
            let rel = RelType::new(&t).map_err(|e| StoreError::Query {
                backend: super::BACKEND,
                what: "write descriptions".into(),
                detail: format!("relationship type {t:?}: {e}"),
            })?;
            statements.push((
                format!(
                    "UNWIND $rows AS row MATCH (:Entity {{id: row.source}})-[x:{}]->\
                     (:Entity {{id: row.target}}) {SET}",
                    rel.cypher()
                ),
                rows,
            ));
        }
        let what = "write descriptions";
        let (mut txn, _in_use) = self.begin().await.map_err(super::q_err(what))?;
        let mut written = 0u64;
        for (text, rows) in statements {
            let q = query(&text).param("rows", BoltType::List(neo4rs::BoltList::from(rows)));
            let result = super::rows_in(&mut txn, q).await;
            match result {
                Ok(rows) => {
                    written += rows
                        .first()
                        .and_then(|r| super::opt_i64(r, "n"))
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0);
                }
                Err(e) => {
                    let _ = txn.rollback().await;
                    return Err(super::q_err(what)(e));
                }
            }
        }
        txn.commit().await.map_err(super::q_err(what))?;
        Ok(written)
    }
}
