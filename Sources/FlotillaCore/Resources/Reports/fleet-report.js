(function(){
var r=JSON.parse(document.getElementById('report-data').textContent);
function el(t,a,txt){var e=document.createElement(t);for(var k in a||{})e.setAttribute(k,a[k]);if(txt!=null)e.textContent=txt;return e;}
function tbl(head,rows){var t=el('table'),tr=el('tr');head.forEach(function(h){tr.appendChild(el('th',{},h));});t.appendChild(tr);
  rows.forEach(function(row){var r=el('tr');row.forEach(function(c,i){r.appendChild(el('td',typeof c==='number'?{'class':'num'}:{},String(c)));});t.appendChild(r);});return t;}
function section(title,node){var s=document.getElementById('sections');s.appendChild(el('h2',{},title));s.appendChild(node);}
function list(items){var u=el('ul');items.forEach(function(i){u.appendChild(el('li',{},i));});if(!items.length)u.appendChild(el('li',{'class':'muted'},'none'));return u;}
document.getElementById('meta').textContent='Generated '+r.generated_at+(r.target_version?' \u2014 target st2 '+r.target_version:'');
var cards=[['hosts',r.reachability.hosts],['reachable',r.reachability.reachable],['unreachable',r.reachability.unreachable]];
if(r.target_version)cards.push(['behind target',r.behind_target.length],['at target',r.at_target.length],['refused',r.refused.length]);
cards.push(['config drift',r.config_drift.length],['unreadable facts',r.unreadable_facts.length]);
cards.forEach(function(c){var d=el('div',{'class':'card','data-card':c[0]});d.appendChild(el('b',{},String(c[1])));d.appendChild(document.createTextNode(c[0]));document.getElementById('cards').appendChild(d);});
var svg=document.getElementById('version-chart'),ns='http://www.w3.org/2000/svg',v=r.st2_versions,bw=56,gap=18,h=180,top=20,max=1;
v.forEach(function(x){if(x.count>max)max=x.count;});
var cw=Math.max(300,v.length*(bw+gap)+40);svg.setAttribute('width',cw);svg.setAttribute('height',h+60);svg.setAttribute('viewBox','0 0 '+cw+' '+(h+60));
function s(t,a,txt){var e=document.createElementNS(ns,t);for(var k in a)e.setAttribute(k,a[k]);if(txt!=null)e.textContent=txt;svg.appendChild(e);return e;}
s('line',{x1:20,y1:top+h,x2:v.length*(bw+gap)+30,y2:top+h,stroke:'#98a2b3'});
v.forEach(function(x,i){var bh=Math.round(x.count/max*h),px=30+i*(bw+gap),known=/^[0-9]/.test(x.label);
  var b=s('rect',{x:px,y:top+h-bh,width:bw,height:bh,fill:known?(x.label===r.target_version?'#12b76a':'#2e90fa'):'#98a2b3','data-version':x.label,'data-count':x.count});
  b.appendChild(document.createElementNS(ns,'title')).textContent=x.label+': '+x.count+' hosts';
  s('text',{x:px+bw/2,y:top+h-bh-5,'text-anchor':'middle'},String(x.count));
  s('text',{x:px+bw/2,y:top+h+16,'text-anchor':'middle'},x.label);});
section('Reachability',list(r.reachability.unreachable_hosts.map(function(u){return u.host+': '+u.error;})));
section('Operating systems',tbl(['OS','hosts'],r.os.map(function(o){return [o.label,o.count];})));
if(r.target_version){
  section('Behind '+r.target_version,tbl(['host','from','to','hops','migrations still needed'],r.behind_target.map(function(b){return [b.host,b.from_version,b.to_version,b.hops.join(', ')||'-',b.migrations.join(', ')||'-'];})));
  var notes=[];r.behind_target.forEach(function(b){b.notes.forEach(function(n){if(notes.indexOf(n)<0)notes.push(n);});});
  section('Operator notes',list(notes));
  section('Refused',list(r.refused.map(function(x){return x.host+': '+x.reason;})));}
section('Components',list(['every component running on '+r.components.all_running+' hosts'].concat(r.components.hosts_with_stopped.map(function(x){return x.host+': not running: '+x.stopped.join(', ');}))));
section('Config drift',list(r.config_drift.map(function(x){return x.host+': '+x.files.join(', ');})));
section('Unreadable facts',list(r.unreadable_facts.map(function(x){return x.host+': '+Object.keys(x.facts).map(function(k){return k+': '+x.facts[k];}).join('; ');})));
section('Hosts',tbl(['host','address','reachable','OS','st2','plan'],r.hosts.map(function(x){return [x.name,x.address,x.reachable?'yes':'no',x.os||'-',x.st2||'-',x.action||'-'];})));
document.body.setAttribute('data-rendered','ok');
})();
