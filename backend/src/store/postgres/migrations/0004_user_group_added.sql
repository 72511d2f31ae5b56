-- Someone else put the user in the group (its creator, an invitation, or an approved member's
-- invitation): once out, the user may hide the group even while the mute it left under runs.
-- Rows from before read as joined by the user itself.
ALTER TABLE user_groups ADD COLUMN added boolean NOT NULL DEFAULT false;
