//! kg-testkit: test support shared by the workspace.
