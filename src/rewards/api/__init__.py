"""HTTP layer: controllers per resource, body validation, auth, problem details, OpenAPI."""
