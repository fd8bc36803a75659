//! What following the controller's plugin registry must do, as a pure function: from
//! the versions the metadata names and the ones this broker has installed, which to
//! install and which to remove. `plugins::sync_with_controller` gathers the inputs and
//! carries the plan out (fetching modules it lacks from other brokers).

use std::collections::BTreeMap;

/// The plan: plugins to install at a version, and plugins to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PluginPlan {
    /// `(name, version)`: the metadata names a version this broker does not run.
    pub(crate) install: Vec<(String, String)>,
    /// Installed here, dropped from the metadata.
    pub(crate) remove: Vec<String>,
}

/// The plan given the metadata's `wanted` versions by plugin name and the `installed`
/// ones. Names come out in order, so a plan is the same whatever the maps' history.
pub(crate) fn plan(
    wanted: &BTreeMap<String, String>,
    installed: &BTreeMap<String, String>,
) -> PluginPlan {
    PluginPlan {
        install: wanted
            .iter()
            .filter(|(name, version)| installed.get(*name) != Some(*version))
            .map(|(name, version)| (name.clone(), version.clone()))
            .collect(),
        remove: installed
            .keys()
            .filter(|name| !wanted.contains_key(*name))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn plans_for_a_table_of_registries() {
        // (case, wanted, installed, install, remove)
        type Case<'c> = (
            &'c str,
            &'c [(&'c str, &'c str)],
            &'c [(&'c str, &'c str)],
            &'c [(&'c str, &'c str)],
            &'c [&'c str],
        );
        let cases: &[Case] = &[
            ("in step", &[("f", "v1")], &[("f", "v1")], &[], &[]),
            ("new plugin", &[("f", "v1")], &[], &[("f", "v1")], &[]),
            (
                "new version",
                &[("f", "v2")],
                &[("f", "v1")],
                &[("f", "v2")],
                &[],
            ),
            // The metadata is the truth even when it names an older version (a
            // rollback), so the local one is replaced, not kept.
            (
                "older version",
                &[("f", "v1")],
                &[("f", "v2")],
                &[("f", "v1")],
                &[],
            ),
            ("dropped", &[], &[("f", "v1")], &[], &["f"]),
            (
                "mixed",
                &[("a", "1"), ("b", "2"), ("c", "3")],
                &[("b", "2"), ("c", "old"), ("d", "4")],
                &[("a", "1"), ("c", "3")],
                &["d"],
            ),
            ("both empty", &[], &[], &[], &[]),
        ];
        for (case, wanted, installed, install, remove) in cases {
            let plan = plan(&versions(wanted), &versions(installed));
            let expected = PluginPlan {
                install: install
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect(),
                remove: remove.iter().map(|n| (*n).to_owned()).collect(),
            };
            assert_eq!(plan, expected, "{case}");
        }
    }
}
