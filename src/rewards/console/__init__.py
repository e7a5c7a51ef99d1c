"""The back-office console: server-rendered pages for the people who run the scheme
(admins and analysts), on the same services as the API. Wired by ``create_app`` under
``/console``; none of its routes are in the OpenAPI document."""
