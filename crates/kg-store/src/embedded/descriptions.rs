//! The embedded store's side of [`crate::descriptions`]: descriptions in
//! the `MENTIONS` and relation property maps, the dirty mark and key in
//! `entities` columns (entities) or the property map (relations).

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Map, Value};

use crate::descriptions::{
    decode_chunk_description, distinct_set, entry_texts, Described, DescriptionSet,
    DescriptionUpdate,
};

/// Adds the entity columns a database made before descriptions were kept
/// lacks.
pub(super) fn migrate(c: &Connection) -> rusqlite::Result<()> {
    let columns: Vec<String> = c
        .prepare("SELECT name FROM pragma_table_info('entities')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for (column, ty) in [
        ("description_key", "TEXT"),
        ("description_dirty", "INTEGER"),
    ] {
        if !columns.iter().any(|c| c == column) {
            c.execute_batch(&format!("ALTER TABLE entities ADD COLUMN {column} {ty}"))?;
        }
    }
    c.execute_batch(
        "CREATE INDEX IF NOT EXISTS entities_description_dirty ON entities (id)
         WHERE description_dirty = 1",
    )
}

/// The string list at `key` of a property map.
pub(super) fn list(props: &Map<String, Value>, key: &str) -> Vec<String> {
    props
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Adds the entries of `new` that `props["descriptions"]` lacks; true when
/// it added any.
pub(super) fn unite(props: &mut Map<String, Value>, new: &[String]) -> bool {
    let mut have = list(props, "descriptions");
    let before = have.len();
    for d in new {
        if !have.contains(d) {
            have.push(d.clone());
        }
    }
    if have.len() == before {
        return false;
    }
    props.insert("descriptions".into(), json!(have));
    true
}

/// Drops a relation's description entries from the `removed` chunks; true
/// when it dropped any.
pub(super) fn trim(props: &mut Map<String, Value>, removed: &HashSet<&str>) -> bool {
    let have = list(props, "descriptions");
    let kept: Vec<&String> = have
        .iter()
        .filter(|e| !decode_chunk_description(e).is_some_and(|(c, _)| removed.contains(c)))
        .collect();
    if kept.len() == have.len() {
        return false;
    }
    props.insert("descriptions".into(), json!(kept));
    true
}

/// Adds `descriptions` to the `MENTIONS` from `chunk` to `entity` (which
/// exists) and marks the entity dirty.
pub(super) fn add_to_mention(
    tx: &Connection,
    chunk: &str,
    entity: &str,
    descriptions: &[String],
) -> rusqlite::Result<()> {
    if descriptions.is_empty() {
        return Ok(());
    }
    let old: Option<String> = tx
        .prepare_cached("SELECT props FROM rels WHERE src = ?1 AND type = 'MENTIONS' AND dst = ?2")?
        .query_row([chunk, entity], |r| r.get(0))
        .optional()?;
    let mut props: Map<String, Value> = old
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    if unite(&mut props, descriptions) {
        tx.prepare_cached(
            "UPDATE rels SET props = ?3 WHERE src = ?1 AND type = 'MENTIONS' AND dst = ?2",
        )?
        .execute([chunk, entity, &Value::Object(props).to_string()])?;
    }
    mark_entity(tx, entity)
}

/// Marks an entity's description as to be made again.
pub(super) fn mark_entity(tx: &Connection, entity: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE entities SET description_dirty = 1 WHERE id = ?1")?
        .execute([entity])
        .map(drop)
}

/// Marks a relation's property map dirty when it has descriptions.
pub(super) fn mark_relation(props: &mut Map<String, Value>) {
    if props.contains_key("descriptions") {
        props.insert("description_dirty".into(), json!(true));
    }
}

/// An entity as the step reads it: id, name, type, description, key.
type EntityRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// See [`crate::GraphStore::stale_descriptions`].
pub(super) fn stale(
    c: &Connection,
    relations: bool,
    after: Option<&Described>,
    limit: usize,
) -> rusqlite::Result<Vec<DescriptionSet>> {
    if relations {
        return stale_relations(c, after, limit);
    }
    let after = Described::entity_cursor(after);
    let rows: Vec<EntityRow> = c
        .prepare_cached(
            "SELECT id, name, type, description, description_key FROM entities
             WHERE description_dirty = 1 AND id > ?1 ORDER BY id LIMIT ?2",
        )?
        .query_map(params![after, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut texts = c.prepare_cached(
        "SELECT DISTINCT d.value FROM rels, json_each(rels.props, '$.descriptions') AS d
         WHERE rels.dst = ?1 AND rels.type = 'MENTIONS'",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, name, ty, description, stored_key) in rows {
        let all: Vec<String> = texts
            .query_map([&id], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<_>>()?;
        let (descriptions, distinct, key) = distinct_set(&all);
        out.push(DescriptionSet {
            target: Described::Entity(id),
            name: name.unwrap_or_default(),
            kind: ty.unwrap_or_default(),
            description: description.unwrap_or_default(),
            descriptions,
            distinct,
            key,
            stored_key,
        });
    }
    Ok(out)
}

fn stale_relations(
    c: &Connection,
    after: Option<&Described>,
    limit: usize,
) -> rusqlite::Result<Vec<DescriptionSet>> {
    let (s, t, o) = Described::relation_cursor(after);
    let mut st = c.prepare_cached(
        "SELECT r.src, r.type, r.dst, r.props, a.name, b.name FROM rels r
         LEFT JOIN entities a ON a.id = r.src LEFT JOIN entities b ON b.id = r.dst
         WHERE r.src_label = 'Entity' AND r.dst_label = 'Entity'
         AND json_extract(r.props, '$.description_dirty') = 1
         AND (r.src, r.type, r.dst) > (?1, ?2, ?3)
         ORDER BY r.src, r.type, r.dst LIMIT ?4",
    )?;
    let rows = st.query_map(params![s, t, o, limit as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (src, ty, dst, props, a, b) = row?;
        let props: Map<String, Value> = serde_json::from_str(&props).unwrap_or_default();
        let entries = list(&props, "descriptions");
        let (descriptions, distinct, key) = distinct_set(entry_texts(&entries));
        out.push(DescriptionSet {
            name: format!(
                "{} -{ty}-> {}",
                a.unwrap_or_else(|| src.clone()),
                b.unwrap_or_else(|| dst.clone())
            ),
            kind: ty.clone(),
            description: props
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            stored_key: props
                .get("description_key")
                .and_then(Value::as_str)
                .map(str::to_owned),
            descriptions,
            distinct,
            key,
            target: Described::Relation {
                source: src,
                rel_type: ty,
                target: dst,
            },
        });
    }
    Ok(out)
}

/// See [`crate::GraphStore::set_descriptions`].
pub(super) fn set(c: &mut Connection, updates: &[DescriptionUpdate]) -> rusqlite::Result<u64> {
    let tx = c.transaction()?;
    let mut written = 0u64;
    for u in updates {
        match &u.target {
            Described::Entity(id) => {
                written += tx
                    .prepare_cached(
                        "UPDATE entities SET description = ?2,
                           description_key = coalesce(?3, description_key),
                           description_dirty = CASE WHEN ?3 IS NULL THEN description_dirty
                             ELSE NULL END
                         WHERE id = ?1",
                    )?
                    .execute(params![id, u.description, u.key])? as u64;
            }
            Described::Relation {
                source,
                rel_type,
                target,
            } => {
                let old: Option<String> = tx
                    .prepare_cached(
                        "SELECT props FROM rels WHERE src = ?1 AND type = ?2 AND dst = ?3",
                    )?
                    .query_row([source, rel_type, target], |r| r.get(0))
                    .optional()?;
                let Some(old) = old else { continue };
                let mut props: Map<String, Value> = serde_json::from_str(&old).unwrap_or_default();
                props.insert("description".into(), json!(u.description));
                if let Some(key) = &u.key {
                    props.insert("description_key".into(), json!(key));
                    props.remove("description_dirty");
                }
                written += tx
                    .prepare_cached(
                        "UPDATE rels SET props = ?4 WHERE src = ?1 AND type = ?2 AND dst = ?3",
                    )?
                    .execute([source, rel_type, target, &Value::Object(props).to_string()])?
                    as u64;
            }
        }
    }
    tx.commit()?;
    Ok(written)
}
