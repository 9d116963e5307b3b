-- Branded domains (issue 25): a name is claimed per account until one verifies it.
-- Before, the first account to add a name held it, verified or not, for ever: anyone
-- could block a brand's name by adding it first. Now every account may hold its own
-- unverified claim (with its own TXT value); only a verified name is unique, and the
-- account that proves control of the name's DNS first gets it (shortlink.domains).
ALTER TABLE domains DROP CONSTRAINT domains_pkey;
ALTER TABLE domains ADD PRIMARY KEY (name, account_id);
CREATE UNIQUE INDEX domains_verified_name ON domains (name) WHERE verified;
