"""Who signs in: users with roles, argon2 passwords, signed access tokens, revocable refresh
tokens, and the slow-down and lock after failed sign-ins (counted in the database)."""
