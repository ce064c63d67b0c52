//! Pure functions from an McpProxy to the objects the operator applies.
