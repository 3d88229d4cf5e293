-- name: GetClusterCA :one
SELECT cert_pem, key_pem FROM cluster_ca WHERE id = 1;

-- name: InsertClusterCA :exec
-- The first replica to start wins; the others read its CA.
INSERT INTO cluster_ca (id, cert_pem, key_pem) VALUES (1, $1, $2)
ON CONFLICT (id) DO NOTHING;
