"""The template side: what an image template is and how it is read, checked and written.

- `model`: the pydantic models of the template, per API version
- `loading`: reading files (JSON, JSONC, ARM deployments) into LoadedTemplate
- `fields`, `rules`: the validation passes (field names and types; AIB's rules)
- `sections`: a customizer's or distribution's own checks; `arm`, `arm_functions`: ARM
  expressions and parameters; `jsonc`: the one JSONC lexer
- `locations`: where a JSON path is written (line, column); `sarif`: SARIF findings
- `schema`: the JSON Schema for editors; `export`: the template as AIB takes it
"""
