-- Argo CD health of a patchwarden.io UpdateRequest (see docs/gitops.md).
local hs = {}
local state = obj.status and obj.status.state or nil
local message = obj.status and obj.status.message or ""
if state == "Rejected" or state == "RolledBack" or state == "Failed" then
  hs.status = "Degraded"
elseif state == "Accepted" or state == "Succeeded" or state == "Completed" then
  hs.status = "Healthy"
elseif state == "Running" then
  hs.status = "Progressing"
else
  hs.status = "Progressing"
  message = "Waiting for patchwarden to decide the request"
end
hs.message = message
return hs
