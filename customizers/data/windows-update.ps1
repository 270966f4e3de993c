# aib-local windows-update worker: search, filter, download and install Windows updates
# through the Windows Update Agent API, as the rgl packer-plugin-windows-update does.
# Exit 0: nothing left to install. Exit 101: updates were installed (or a restart is
# pending): restart, then run again.
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
trap {
  Write-Output "ERROR: $_"
  Write-Output (($_.ScriptStackTrace -split '\r?\n') -replace '^', 'ERROR: ')
  Write-Output 'Exiting with code 1'
  exit 1
}

function Exit-With([int]$code) {
  Write-Output "Exiting with code $code"
  exit $code
}

function Test-RestartPending {
  if ((New-Object -ComObject Microsoft.Update.SystemInfo).RebootRequired) { return $true }
  $pending = 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\PackagesPending'
  return (Test-Path $pending) -and (@(Get-ChildItem $pending).Count -gt 0)
}

if (Test-RestartPending) {
  Write-Output 'A restart is pending.'
  Exit-With 101
}

$session = New-Object -ComObject Microsoft.Update.Session
$session.ClientApplicationID = 'aib-local-windows-update'
$searcher = $session.CreateUpdateSearcher()
Write-Output "Searching for Windows updates: $SearchCriteria"
$result = $null
foreach ($attempt in 1..10) {
  try {
    $result = $searcher.Search($SearchCriteria)
    if ($result.ResultCode -eq 2) { break }
    Write-Output "Search attempt $attempt ended with result code $($result.ResultCode)"
  } catch {
    Write-Output "Search attempt $attempt failed: $_"
  }
  $result = $null
  Start-Sleep -Seconds 5
}
if ($null -eq $result) {
  Write-Output 'Windows Update search failed 10 times'
  Exit-With 1
}

$install = New-Object -ComObject Microsoft.Update.UpdateColl
$seen = @{}
foreach ($update in $result.Updates) {
  $decision = 'exclude'
  foreach ($filter in $Filters) {
    $action, $expression = $filter -split ':', 2
    if (@($update | Where-Object ([ScriptBlock]::Create($expression))).Count -gt 0) {
      $decision = $action
      break
    }
  }
  if ($decision -ne 'include') {
    Write-Output "Skipped (filter) Windows update: $($update.Title)"
    continue
  }
  if ($seen.ContainsKey($update.Title)) { continue }
  $seen[$update.Title] = $true
  if ($install.Count -ge $UpdateLimit) {
    Write-Output "Update limit ($UpdateLimit) reached: the rest follow after the restart"
    break
  }
  if ($update.InstallationBehavior.CanRequestUserInput) {
    Write-Output "Warning: this update may ask for input (exclude it with a filter): $($update.Title)"
  }
  $size = $update.MaxDownloadSize / 1MB
  Write-Output ("Found Windows update ({0:yyyy-MM-dd}; {1:N1} MB): {2}" -f $update.LastDeploymentChangeTime, $size, $update.Title)
  $update.AcceptEula() | Out-Null
  $install.Add($update) | Out-Null
}

if ($install.Count -eq 0) {
  Write-Output 'No Windows updates found'
  Exit-With 0
}

Write-Output "Downloading $($install.Count) Windows update(s)..."
$downloader = $session.CreateUpdateDownloader()
$downloader.Updates = $install
$downloader.Priority = 4
foreach ($attempt in 1..10) {
  $download = $downloader.Download()
  if ($download.ResultCode -in 2, 3) { break }
  Write-Output "Download attempt $attempt ended with result code $($download.ResultCode)"
  if ($attempt -eq 10) { Exit-With 1 }
  Start-Sleep -Seconds 5
}

Write-Output 'Installing Windows updates...'
$installer = $session.CreateUpdateInstaller()
$installer.Updates = $install
try {
  $outcome = $installer.Install()
  Write-Output "Install ended with result code $($outcome.ResultCode) (restart required: $($outcome.RebootRequired))"
} catch {
  Write-Output "Warning: install failed: $_"
}
# After any install, restart and search again, as the windows-update provisioner does.
Exit-With 101
